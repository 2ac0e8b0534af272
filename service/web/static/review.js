// The review queue from the keyboard: decide, undo, step through recent items, zoom and pan.
(function () {
  "use strict";
  var root = document.getElementById("review");
  if (!root) return;
  var PLACEHOLDER_ID = "2147483647";
  var COMMAND_KEYS = { u: "unknown", x: "unusable", s: "skip" };
  var MAX_OPTIONS = 12;
  var csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  var jobId = root.getAttribute("data-job-id");
  var $ = function (id) { return document.getElementById(id); };
  var viewer = $("viewer"), photo = $("photo"), input = $("label-input"), options = $("label-options");

  var state = {
    current: null,   // the item the reviewer is deciding (claimed)
    shown: null,     // what is on screen: the current item or a past one
    readonly: null,  // the annotation shown when stepping back, else null
    recent: [],      // the reviewer's recent annotations, newest first
    history: -1,     // index into recent; -1 is the current item
    busy: false,
    zoom: 1, x: 0, y: 0,
    choices: [], active: 0,
  };

  // ------------------------------------------------------------------ requests

  function request(method, url, body) {
    var init = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrf },
    };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      var payload = body || {};
      if (jobId) payload.job_id = Number(jobId);
      init.body = JSON.stringify(payload);
    }
    return fetch(url, init).then(function (r) {
      if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
      return r.json().then(function (data) {
        if (!r.ok) { var e = new Error(data.message || ("HTTP " + r.status)); e.status = r.status; throw e; }
        return data;
      });
    });
  }

  function run(promise) {
    state.busy = true;
    root.setAttribute("aria-busy", "true");
    return promise.then(function (data) { showError(""); return data; })
      .catch(function (err) {
        showError(err.message);
        if (err.status === 409 || err.status === 404) return load();  // someone else decided it
      })
      .finally(function () { state.busy = false; root.removeAttribute("aria-busy"); });
  }

  function load() {
    return request("POST", root.getAttribute("data-next-url")).then(accept);
  }

  function accept(data) {
    state.current = data.item;
    state.recent = data.recent || [];
    state.history = -1;
    state.readonly = null;
    renderStats(data.stats);
    show(data.item);
    return data;
  }

  function decide(decision, label) {
    if (state.busy || state.readonly || !state.current) return;
    var url = root.getAttribute("data-decide-url").replace(PLACEHOLDER_ID, state.current.id);
    var body = { decision: decision };
    if (label !== undefined) body.label = label;
    run(request("POST", url, body).then(function (data) {
      var a = data.annotation;
      announce("Saved: " + (a.decision === "label" ? a.label : a.decision) + ".");
      accept(data);
    }));
  }

  function undo() {
    if (state.busy) return;
    run(request("POST", root.getAttribute("data-undo-url")).then(function (data) {
      announce(data.annotation ? "Undone: " + describe(data.annotation) + "." : "Nothing to undo.");
      accept(data);
    }));
  }

  function step(delta) {  // delta +1: back in time, -1: forward
    if (state.busy) return;
    var target = state.history + delta;
    if (target < -1 || target >= state.recent.length) return;
    state.history = target;
    if (target === -1) { state.readonly = null; show(state.current); return; }
    var a = state.recent[target];
    var url = root.getAttribute("data-annotation-url").replace(PLACEHOLDER_ID, a.id);
    if (jobId) url += "?job_id=" + encodeURIComponent(jobId);
    run(request("GET", url).then(function (data) {
      if (state.history !== target) return;
      state.readonly = data.annotation;
      show(data.item);
    }));
  }

  // ------------------------------------------------------------------ rendering

  function describe(a) {
    return a.decision === "label" ? a.label : { unknown: "unknown species", unusable: "not usable", skip: "skipped" }[a.decision];
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
    closeTypeahead();
    resetZoom();
    $("empty").hidden = !!item;
    photo.hidden = !item;
    var banner = $("readonly");
    if (state.readonly) {
      banner.hidden = false;
      banner.textContent = "Decided " + (state.history + 1) + " back: " + describe(state.readonly) +
        " (read-only). Press → to return.";
    } else {
      banner.hidden = true;
    }
    root.classList.toggle("is-readonly", !!state.readonly);
    root.setAttribute("data-item-id", item ? item.id : "");
    if (!item) {
      ["rel-path", "captured", "reason", "model-name", "full-path"].forEach(function (id) { $(id).textContent = ""; });
      $("topk").replaceChildren();
      $("siblings").replaceChildren();
      return;
    }
    if (photo.getAttribute("data-src") !== item.image.url) {
      photo.setAttribute("data-src", item.image.url);
      photo.onerror = function () {  // formats a browser cannot show (TIFF): the thumbnail
        if (photo.src.indexOf(item.thumbnail_url) === -1) photo.src = item.thumbnail_url;
      };
      photo.src = item.image.url;
    }
    photo.alt = "Photo " + item.image.rel_path;
    text("rel-path", item.image.rel_path);
    $("rel-path").title = item.image.path;
    text("full-path", item.image.path);
    text("captured", placeAndTime(item.image));
    text("reason", item.reason_text);
    text("model-name", item.prediction.model_name ? "· " + item.prediction.model_name : "");
    renderTopk(item.prediction.topk);
    renderSiblings(item.siblings);
    viewer.focus({ preventScroll: true });
  }

  // Camera time as the camera (corrected for the site's clock) gave it: never re-zoned to
  // the browser's time zone. The offset is shown only when it is known.
  function formatTime(iso) {
    var m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(.*)$/.exec(iso);
    return m ? m[1] + " " + m[2] + (m[3] ? " (UTC" + m[3] + ")" : " (camera time, offset unknown)") : iso;
  }

  function placeAndTime(image) {
    var parts = [image.captured_at ? formatTime(image.captured_at) : "no capture time"];
    if (image.site) parts.unshift("site " + image.site);
    if (image.gps_lat !== null && image.gps_lat !== undefined) {
      parts.push("GPS " + image.gps_lat.toFixed(5) + ", " + image.gps_lon.toFixed(5));
    }
    return parts.join(" · ");
  }

  function renderTopk(topk) {
    var chosen = state.readonly && state.readonly.decision === "label" ? state.readonly.label : null;
    $("topk").replaceChildren.apply($("topk"), topk.slice(0, 9).map(function (t) {
      var li = document.createElement("li");
      if (t.label === chosen) li.className = "chosen";
      if (t.venomous) li.classList.add("venomous");
      var pct = Math.round(t.confidence * 1000) / 10;
      li.innerHTML = '<kbd></kbd><span class="name"></span><span class="pct"></span>' +
        '<span class="confbar" aria-hidden="true"><span></span></span>';
      li.children[0].textContent = String(t.rank);
      li.children[1].textContent = t.label.replace(/_/g, " ") + (t.venomous ? " \u26A0 VENOMOUS" : "");
      li.children[1].title = t.label;
      li.children[2].textContent = pct.toFixed(1) + " %";
      li.children[3].firstChild.style.width = Math.max(pct, 0.5) + "%";
      li.setAttribute("aria-label", "Press " + t.rank + ": " + t.label + (t.venomous ? ", venomous" : "") + ", " + pct.toFixed(1) + " percent");
      li.addEventListener("click", function () { decide("label", t.label); });
      return li;
    }));
  }

  function renderSiblings(siblings) {
    $("siblings").replaceChildren.apply($("siblings"), siblings.map(function (s) {
      var li = document.createElement("li");
      if (s.current) { li.className = "current"; li.setAttribute("aria-current", "true"); }
      var img = document.createElement("img");
      img.src = s.thumbnail_url;
      img.alt = "";
      img.loading = "lazy";
      var cap = document.createElement("span");
      cap.className = "cap";
      var human = s.human_decision === "label" ? s.human_label : s.human_decision;
      cap.textContent = human ? "✓ " + human.replace(/_/g, " ") : (s.machine_label || "").replace(/_/g, " ");
      if (human) cap.classList.add("human");
      li.title = s.rel_path + (human ? " — reviewed: " + human : " — model: " + (s.machine_label || "none"));
      li.append(img, cap);
      return li;
    }));
  }

  function announce(message) { $("announce").textContent = message; }

  function showError(message) {
    var el = $("error");
    el.hidden = !message;
    el.textContent = message;
  }

  // ------------------------------------------------------------------ type-ahead

  function openTypeahead(prefix) {
    if (!state.current || state.readonly) return;
    $("typeahead").hidden = false;
    input.value = prefix || "";
    input.setAttribute("aria-expanded", "true");
    input.focus();
    filterOptions();
  }

  function closeTypeahead() {
    $("typeahead").hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    input.value = "";
    if (document.activeElement === input) viewer.focus({ preventScroll: true });
  }

  function norm(s) { return s.toLowerCase().replace(/[_\s]+/g, " ").trim(); }

  function filterOptions() {
    var typed = input.value.trim(), q = norm(typed);
    var labels = (state.current && state.current.labels) || [];
    var starts = [], contains = [], exact = false;
    labels.forEach(function (label) {
      var n = norm(label);
      if (n === q) exact = true;
      if (!q || n.indexOf(q) === 0) starts.push(label);
      else if (n.indexOf(q) > 0) contains.push(label);
    });
    state.choices = starts.concat(contains).slice(0, MAX_OPTIONS).map(function (l) { return { label: l, isNew: false }; });
    if (typed && !exact) state.choices.push({ label: typed, isNew: true });
    state.active = 0;
    renderOptions();
  }

  function renderOptions() {
    options.replaceChildren.apply(options, state.choices.map(function (c, i) {
      var li = document.createElement("li");
      li.id = "label-option-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === state.active ? "true" : "false");
      li.textContent = c.isNew ? "+ New label “" + c.label + "”" : c.label.replace(/_/g, " ");
      if (c.isNew) li.className = "new";
      li.addEventListener("mousedown", function (e) { e.preventDefault(); pick(i); });
      return li;
    }));
    if (state.choices.length) input.setAttribute("aria-activedescendant", "label-option-" + state.active);
    else input.removeAttribute("aria-activedescendant");
  }

  function pick(index) {
    var choice = state.choices[index];
    if (!choice) return;
    closeTypeahead();
    decide("label", choice.label);
  }

  input.addEventListener("input", filterOptions);
  input.addEventListener("keydown", function (e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      var n = state.choices.length;
      if (n) { state.active = (state.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n; renderOptions(); }
    } else if (e.key === "Enter") {
      e.preventDefault();
      pick(state.active);
    } else if (e.key === "Escape") {
      e.preventDefault();
      closeTypeahead();
    }
    e.stopPropagation();  // every other key types into the input
  });
  input.addEventListener("blur", function () {
    setTimeout(function () { if (document.activeElement !== input) closeTypeahead(); }, 0);
  });

  // ------------------------------------------------------------------ zoom and pan

  function applyZoom() {
    photo.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
    $("zoom-level").textContent = state.zoom === 1 ? "" : Math.round(state.zoom * 100) + " %";
  }

  function zoomBy(factor, cx, cy) {
    var rect = viewer.getBoundingClientRect();
    if (cx === undefined) { cx = rect.width / 2; cy = rect.height / 2; }
    var z = Math.min(16, Math.max(1, state.zoom * factor));
    var k = z / state.zoom;
    state.x = cx - (cx - state.x) * k;
    state.y = cy - (cy - state.y) * k;
    state.zoom = z;
    if (z === 1) { state.x = 0; state.y = 0; }
    applyZoom();
  }

  function resetZoom() { state.zoom = 1; state.x = 0; state.y = 0; applyZoom(); }

  viewer.addEventListener("wheel", function (e) {
    e.preventDefault();
    var rect = viewer.getBoundingClientRect();
    zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });

  var drag = null;
  viewer.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX - state.x, y: e.clientY - state.y };
    viewer.setPointerCapture(e.pointerId);
    viewer.classList.add("dragging");
  });
  viewer.addEventListener("pointermove", function (e) {
    if (!drag) return;
    state.x = e.clientX - drag.x;
    state.y = e.clientY - drag.y;
    applyZoom();
  });
  ["pointerup", "pointercancel"].forEach(function (type) {
    viewer.addEventListener(type, function () { drag = null; viewer.classList.remove("dragging"); });
  });
  viewer.addEventListener("dblclick", resetZoom);

  // ------------------------------------------------------------------ keys

  function onKey(e) {
    var target = e.target;
    if (target === input) return;
    if (e.altKey || e.metaKey) return;
    var key = e.key;
    if (e.ctrlKey) {
      if (key.toLowerCase() === "z") { e.preventDefault(); undo(); }
      return;  // leave the browser's own shortcuts alone
    }
    // A focused button or link keeps its own Enter and Space.
    var native = target.closest && target.closest("button, a, input, select, textarea");
    if (native && (key === "Enter" || key === " ")) return;
    if (native && native.tagName !== "BUTTON" && native.tagName !== "A") return;

    var handled = true;
    var lower = key.length === 1 ? key.toLowerCase() : key;
    if (/^[1-9]$/.test(key)) {
      var t = state.current && !state.readonly && state.current.prediction.topk[Number(key) - 1];
      if (t) decide("label", t.label);
    } else if (key === "Enter") {
      if (state.current && !state.readonly) decide("label", state.current.prediction.topk[0].label);
    } else if (COMMAND_KEYS[lower]) {
      decide(COMMAND_KEYS[lower]);
    } else if (lower === "z") {
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
    } else if (key === "/" || lower === "l") {
      openTypeahead("");
    } else if (/^\p{L}$/u.test(key)) {
      openTypeahead(key);
    } else if (key === "Escape") {
      if (state.readonly) step(-state.history - 1);
    } else {
      handled = false;
    }
    if (handled) e.preventDefault();
  }

  document.addEventListener("keydown", onKey);
  root.querySelectorAll("[data-key]").forEach(function (button) {
    button.addEventListener("click", function () {
      var k = button.getAttribute("data-key");
      if (k === "z") undo(); else decide(COMMAND_KEYS[k]);
      viewer.focus({ preventScroll: true });
    });
  });

  run(load());
})();
