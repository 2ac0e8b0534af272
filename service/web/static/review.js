// The review queue from the keyboard: decide, undo, change recent decisions, zoom; photos read ahead.
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root) return;
  var PLACEHOLDER_ID = "2147483647";
  // Commands sit on keys that cannot start a name: every letter types into the label search.
  var COMMAND_KEYS = { ".": "unknown", Delete: "unusable", " ": "skip" };
  var MAX_OPTIONS = 12;
  var TOAST_MS = 2500, ERROR_TOAST_MS = 6000;
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var jobId = root.getAttribute("data-job-id");
  var $ = function (id) { return document.getElementById(id); };
  var viewer = $("viewer"), photo = $("photo"), input = $("label-input"), options = $("label-options");

  var state = {
    current: null,   // the item the reviewer is deciding (claimed)
    shown: null,     // what is on screen: the current item or a past one
    past: null,      // the annotation on screen when stepping back, else null
    recent: [],      // the reviewer's recent annotations in this queue, newest first
    history: -1,     // index into recent; -1 is the current item
    undoneNote: null,  // what had been chosen for the current item before an undo
    ahead: [],       // the items held for the reviewer after the current one, in order
    inFlight: 0,     // decisions posted and not answered yet
    decidedIds: {},  // items decided since the last full answer (never shown again)
    chain: Promise.resolve(),
    busy: false,
    choices: [], active: -1,
    preloaded: [],
  };

  // ------------------------------------------------------------------ requests

  var request = window.HerpscoreRequest(csrf, jobId);

  // Every request runs after the ones before it, in the order the keys were pressed.
  function run(makeRequest) {
    state.busy = true;
    root.setAttribute("aria-busy", "true");
    state.chain = state.chain.then(makeRequest).catch(function (err) {
      toast(err.message, "error");
      if (err.status === 409 || err.status === 404) return load();
    }).finally(function () {
      state.busy = false;
      if (!state.inFlight) root.removeAttribute("aria-busy");
    }).catch(function () {});  // a failed reload was shown already; the chain goes on
  }

  function load() {
    return request("POST", root.getAttribute("data-next-url")).then(accept);
  }

  function accept(data) {
    state.decidedIds = {};  // the server's answer is the whole truth again
    var already = !state.past && state.shown && data.item && state.shown.id === data.item.id;
    state.current = data.item;
    state.ahead = data.ahead || [];
    state.recent = data.recent || [];
    state.history = -1;
    state.past = null;
    renderStats(data.stats);
    renderRecent();
    // Shown already (ahead of the answer): keep the screen, and whatever is being typed.
    if (already) state.shown = data.item; else show(data.item);
    preload(data.upcoming || []);
    return data;
  }

  // The next items' photos are fetched and decoded while the reviewer looks at this one.
  function preload(urls) {
    state.preloaded = urls.map(function (url) {
      var img = new Image();
      img.src = url;
      if (img.decode) img.decode().catch(function () {});
      return img;
    });
  }

  function decide(decision, label) {
    if (!state.shown || state.busy) return;
    var body = { decision: decision };
    if (label !== undefined) body.label = label;
    var name = state.shown.image.rel_path.split("/").pop();
    var past = state.past;
    if (past) {
      if (state.inFlight) return;
      var changeUrl = root.getAttribute("data-change-url").replace(PLACEHOLDER_ID, past.id);
      run(function () {
        return request("POST", changeUrl, body).then(function (data) {
          toast("Changed to " + describe(data.annotation) + " for " + name + ".", "ok");
          state.undoneNote = null;
          accept(data);
        });
      });
      return;
    }
    if (!state.current) return;
    var next = state.ahead.shift();
    if (state.inFlight && !next) return;  // nothing held to show yet: the answer brings more
    var decided = state.current;
    var url = root.getAttribute("data-decide-url").replace(PLACEHOLDER_ID, decided.id);
    // The next item is already the reviewer's (held under their lease) and its photo is
    // loaded: show it now, and let the decision travel behind it.
    state.decidedIds[decided.id] = true;
    state.inFlight++;
    root.setAttribute("aria-busy", "true");
    if (next) { state.undoneNote = null; state.current = next; show(next); }
    state.chain = state.chain.then(function () {
      return request("POST", url, body);
    }).then(function (data) {
      state.inFlight--;
      var what = describe(data.annotation);
      toast(decision === "skip" ? "Skipped " + name + "." : "Saved: " + what + " for " + name + ".", "ok");
      if (state.inFlight) refill(data); else { state.undoneNote = null; accept(data); }
    }).catch(function (err) {
      state.inFlight--;
      toast(err.message, "error");
      state.ahead = [];
      // Not saved: the server still holds that photo for the reviewer and shows it again.
      if (!state.inFlight) return load();
    }).finally(function () {
      if (!state.inFlight && !state.busy) root.removeAttribute("aria-busy");
    }).catch(function (err) { toast(err.message, "error"); });
  }

  // `*`: the top suggestion for every photo of the burst, each its own annotation (one undo).
  // Members may be among the items held ahead, so the page waits for the server's answer.
  function decideBurst() {
    var item = state.current;
    if (!item || state.past || state.busy || state.inFlight) return;
    if (!item.burst || item.burst.length < 2) { toast("This photo is not part of a burst.", "info"); return; }
    var label = item.prediction.topk[0].label;
    var url = root.getAttribute("data-decide-url").replace(PLACEHOLDER_ID, item.id);
    run(function () {
      return request("POST", url, { decision: "label", label: label, burst: true }).then(function (data) {
        toast("Saved: " + describe(data.annotation) + " for " + data.decided + " photos of the burst.", "ok");
        state.undoneNote = null;
        accept(data);
      });
    });
  }

  // An answer while later decisions are still on their way: counts, strip, and more held items.
  function refill(data) {
    renderStats(data.stats);
    state.recent = data.recent || [];
    renderRecent();
    preload(data.upcoming || []);
    var have = {};
    if (state.current) have[state.current.id] = true;
    state.ahead.forEach(function (a) { have[a.id] = true; });
    [data.item].concat(data.ahead || []).forEach(function (x) {
      if (x && !have[x.id] && !state.decidedIds[x.id]) { state.ahead.push(x); have[x.id] = true; }
    });
  }

  function undo() {
    var body = state.past ? { annotation_id: state.past.id } : {};
    run(function () {
      return request("POST", root.getAttribute("data-undo-url"), body).then(function (data) {
        var a = data.annotation;
        state.undoneNote = a && a.decision !== "skip" ? describe(a) : null;
        var what = a && a.burst_lead_id ? " for the whole burst" : "";
        toast(a ? "Undone: " + describe(a) + what + ". The photo is back for you to decide." : "Nothing to undo here.", a ? "ok" : "info");
        accept(data);
      });
    });
  }

  function step(delta) {  // delta +1: back in time, -1: forward
    if (state.busy) return;
    goTo(state.history + delta);
  }

  function goTo(target) {
    if (target < -1 || target >= state.recent.length) return;
    state.history = target;
    if (target === -1) { state.past = null; show(state.current); renderRecent(); return; }
    var a = state.recent[target];
    var url = root.getAttribute("data-annotation-url").replace(PLACEHOLDER_ID, a.id);
    if (jobId) url += "?job_id=" + encodeURIComponent(jobId);
    // A read: not serialised behind `busy`, so quick arrow presses all count.
    request("GET", url).then(function (data) {
      if (state.history !== target) return;
      state.past = data.annotation;
      show(data.item);
      renderRecent();
    }).catch(function (err) { toast(err.message, "error"); });
  }

  // ------------------------------------------------------------------ rendering

  var render = window.HerpscoreReviewRender;
  var pretty = render.pretty, describe = render.describe;

  function renderTopk(topk) {
    var chosen = state.past && state.past.decision === "label" ? state.past.label : null;
    $("topk").replaceChildren.apply($("topk"), render.topkItems(topk, chosen, function (label) { decide("label", label); }));
  }

  function renderSiblings(siblings) {
    $("siblings").replaceChildren.apply($("siblings"), render.siblingItems(siblings));
  }

  function renderRecent() {
    $("recent").replaceChildren.apply($("recent"), render.recentItems(state.recent, state.history, goTo));
    renderButtons();
  }

  function text(id, value) { $(id).textContent = value === null || value === undefined ? "–" : value; }

  function renderStats(s) {
    if (!s) return;
    text("stat-available", s.available);
    text("stat-claimed", s.claimed);
    text("stat-done", s.done);
    text("stat-mine", s.decided_by_you_24h);
  }

  function show(item) {
    state.shown = item;
    clearSearch();
    resetZoom();
    $("empty").hidden = !!item;
    photo.hidden = !item;
    $("panel").classList.toggle("is-empty", !item);
    $("original").hidden = !item;
    var banner = $("readonly");
    if (state.past) {
      banner.hidden = false;
      banner.textContent = "You chose " + describe(state.past) + " for this photo. Pick another answer to change it, " +
        "⌫ to undo it, → to go back to the queue.";
    } else if (item && state.undoneNote) {
      banner.hidden = false;
      banner.textContent = "You had chosen " + state.undoneNote + " for this photo (undone).";
    } else {
      banner.hidden = true;
    }
    root.classList.toggle("is-past", !!state.past);
    root.setAttribute("data-item-id", item ? item.id : "");
    root.setAttribute("data-shown-annotation", state.past ? state.past.id : "");
    renderButtons();
    if (!item) {
      ["rel-path", "captured", "reason", "model-name", "full-path"].forEach(function (id) { $(id).textContent = ""; });
      $("topk").replaceChildren();
      $("siblings").replaceChildren();
      return;
    }
    var src = item.image.display_url || item.image.url;
    if (photo.getAttribute("data-src") !== src) {
      photo.setAttribute("data-src", src);
      photo.setAttribute("data-original", "");
      photo.src = src;
    }
    photo.alt = "Photo " + item.image.rel_path;
    text("rel-path", item.image.rel_path);
    $("rel-path").title = item.image.path;
    text("full-path", item.image.path);
    text("captured", render.placeAndTime(item.image));
    text("reason", item.reason_text);
    text("model-name", item.prediction.model_name ? "· " + item.prediction.model_name : "");
    renderTopk(item.prediction.topk);
    var burst = item.burst && item.burst.length > 1;
    $("siblings-title").textContent = burst ? "Burst: " + item.burst.length + " photos (* saves the top suggestion for all)" : "Same folder";
    renderSiblings(burst ? item.burst : item.siblings);
    viewer.focus({ preventScroll: true });
  }

  function renderButtons() {
    var canDecide = !!state.shown;
    root.querySelectorAll("[data-command]").forEach(function (b) {
      var c = b.getAttribute("data-command");
      b.hidden = c === "undo" ? !(state.past || state.recent.length)
        : c === "burst" ? !(canDecide && !state.past && state.shown.burst && state.shown.burst.length > 1) : !canDecide;
    });
  }

  function loadOriginal() {
    var item = state.shown;
    if (!item || photo.getAttribute("data-original")) return;
    photo.setAttribute("data-original", "1");
    photo.src = item.image.url;
    $("original").hidden = true;
  }

  photo.addEventListener("error", function () {
    // A format the browser cannot show (TIFF) as the original: back to the display copy.
    var item = state.shown;
    if (item && photo.getAttribute("data-original") && item.image.display_url) photo.src = item.image.display_url;
  });

  var toastTimer = null;
  function toast(message, kind) {
    var el = $("toast");
    el.textContent = message;
    el.className = "toast toast-" + (kind || "info");
    el.hidden = false;
    $("announce").textContent = message;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, kind === "error" ? ERROR_TOAST_MS : TOAST_MS);
  }

  // ------------------------------------------------------------------ label search

  function filterOptions() {
    var typed = input.value.trim(), shown = state.shown || {};
    var found = window.HerpscoreLabels.search(shown.labels || [], shown.label_names || {}, typed);
    state.choices = found.choices.slice(0, MAX_OPTIONS);
    state.active = state.choices.length ? 0 : -1;
    input.setAttribute("aria-expanded", state.choices.length ? "true" : "false");
    var newLabel = $("new-label");
    // Creating a label is its own button, offered only when nothing known is (nearly) that name.
    newLabel.hidden = !typed || found.near;
    newLabel.textContent = "+ Create new label “" + typed + "”";
    var hint = $("search-hint");
    hint.hidden = !typed || state.choices.length > 0;
    hint.textContent = "No known label matches. Check the spelling, or create a new label below.";
    renderOptions();
  }

  function renderOptions() {
    options.replaceChildren.apply(options, state.choices.map(function (label, i) {
      var li = document.createElement("li");
      li.id = "label-option-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === state.active ? "true" : "false");
      var names = (state.shown && state.shown.label_names || {})[label];
      li.textContent = pretty(label);
      li.title = label;
      if (names && names.common_name) {
        var common = document.createElement("span");
        common.className = "common-name";
        common.textContent = names.common_name;
        li.append(" ", common);
      }
      li.addEventListener("mousedown", function (e) { e.preventDefault(); pick(label); });
      return li;
    }));
    if (state.active >= 0) input.setAttribute("aria-activedescendant", "label-option-" + state.active);
    else input.removeAttribute("aria-activedescendant");
  }

  function pick(label) {
    if (!label) return;
    clearSearch();
    decide("label", label);
  }

  function clearSearch() {
    input.value = "";
    state.choices = [];
    state.active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    options.replaceChildren();
    $("new-label").hidden = true;
    $("search-hint").hidden = true;
    if (document.activeElement === input) viewer.focus({ preventScroll: true });
  }

  input.addEventListener("input", filterOptions);
  input.addEventListener("keydown", function (e) {
    e.stopPropagation();  // every other key types into the search
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      var n = state.choices.length;
      if (n) { state.active = (state.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n; renderOptions(); }
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (state.active >= 0) pick(state.choices[state.active]);
      else if (input.value.trim()) toast("No known label matches “" + input.value.trim() + "”. To add it, use “Create new label”.", "info");
    } else if (e.key === "Escape") {
      e.preventDefault();
      clearSearch();
    }
  });
  $("new-label").addEventListener("click", function () { pick(input.value.trim()); });
  $("new-label").addEventListener("keydown", function (e) { e.stopPropagation(); });

  // ------------------------------------------------------------------ zoom and pan

  var zoom = window.HerpscoreZoom(viewer, photo, $("zoom-level"), function () { loadOriginal(); });
  var zoomBy = zoom.zoomBy, resetZoom = zoom.reset;
  $("original").addEventListener("click", function () { loadOriginal(); viewer.focus({ preventScroll: true }); });

  // ------------------------------------------------------------------ help

  function toggleHelp(open) {
    var help = $("help");
    help.hidden = !open;
    $("help-button").setAttribute("aria-expanded", open ? "true" : "false");
    if (open) $("help-close").focus(); else viewer.focus({ preventScroll: true });
  }
  $("help-button").addEventListener("click", function () { toggleHelp(true); });
  $("help-close").addEventListener("click", function () { toggleHelp(false); });

  // ------------------------------------------------------------------ keys

  function onKey(e) {
    var key = e.key;
    if (!$("help").hidden) {
      if (key === "Escape" || key === "?") { e.preventDefault(); toggleHelp(false); }
      return;
    }
    if (e.altKey || e.metaKey) return;
    if (e.ctrlKey) {
      if (key.toLowerCase() === "z") { e.preventDefault(); undo(); }
      return;  // leave the browser's own shortcuts alone
    }
    var target = e.target;
    // A focused button or link keeps its own Enter and Space.
    var native = target.closest && target.closest("button, a, input, select, textarea");
    if (native && (key === "Enter" || key === " ")) return;
    if (native && native.tagName !== "BUTTON" && native.tagName !== "A") return;

    if (key.length === 1 && /\p{L}/u.test(key)) {
      // Letters only ever type: into the search, which takes the focus from here on.
      if (!state.shown) return;
      e.preventDefault();
      input.focus();
      input.value += key;
      filterOptions();
      return;
    }
    var handled = true;
    if (/^[1-9]$/.test(key)) {
      var t = state.shown && state.shown.prediction.topk[Number(key) - 1];
      if (t) decide("label", t.label);
    } else if (key === "Enter") {
      if (state.shown) decide("label", state.shown.prediction.topk[0].label);
    } else if (COMMAND_KEYS[key]) {
      if (!(state.past && key === " ")) decide(COMMAND_KEYS[key]);
    } else if (key === "*") {
      decideBurst();
    } else if (key === "Backspace") {
      undo();
    } else if (key === "ArrowLeft") {
      step(1);
    } else if (key === "ArrowRight") {
      step(-1);
    } else if (key === "+" || key === "=") {
      zoomBy(1.25);
    } else if (key === "-" || key === "_") {
      zoomBy(1 / 1.25);
    } else if (key === "0") {
      resetZoom();
    } else if (key === "?") {
      toggleHelp(true);
    } else if (key === "Escape") {
      if (state.past) goTo(-1);
    } else {
      handled = false;
    }
    if (handled) e.preventDefault();
  }

  document.addEventListener("keydown", onKey);
  root.querySelectorAll("[data-command]").forEach(function (button) {
    button.addEventListener("click", function () {
      var c = button.getAttribute("data-command");
      if (c === "undo") undo(); else if (c === "burst") decideBurst(); else decide(c);
      viewer.focus({ preventScroll: true });
    });
  });

  run(load);
})();
