// The suspect-label list: j/k move, c keeps the human label, m takes the model's, l types
// another. Each re-review posts the row's own form (a new annotation) and marks it resolved.
(function () {
  "use strict";
  var table = document.getElementById("suspects");
  if (!table) return;
  var status = document.getElementById("suspect-status");
  var rows = Array.prototype.slice.call(table.querySelectorAll("tr.suspect"));
  var current = -1;

  function select(index) {
    if (!rows.length) return;
    index = Math.max(0, Math.min(rows.length - 1, index));
    if (current >= 0) rows[current].classList.remove("selected");
    current = index;
    rows[current].classList.add("selected");
    rows[current].focus({ preventScroll: true });
    rows[current].scrollIntoView({ block: "nearest" });
  }

  function nextOpen(from) {
    for (var i = from + 1; i < rows.length; i++) if (rows[i].dataset.status === "open") return i;
    return from;
  }

  function say(text) { status.textContent = text; }

  function send(form, verdict) {
    var row = form.closest("tr");
    var data = new FormData(form);
    data.set("verdict", verdict);
    if (verdict !== "label") data.delete("label");
    var buttons = form.querySelectorAll("button, input");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error(body.message || ("HTTP " + r.status));
        return body;
      });
    }).then(function (body) {
      var s = body.suspect;
      row.dataset.status = s.status;
      row.classList.add("resolved");
      var now = s.current || {};
      row.querySelector(".suspect-state").textContent =
        "resolved: " + (now.label || now.decision || "") + (now.reviewer ? " by " + now.reviewer : "");
      form.remove();
      say("Re-reviewed #" + s.rank + " " + s.name + ": " + (now.label || now.decision) + ".");
      select(nextOpen(rows.indexOf(row)));
    }).catch(function (e) {
      buttons.forEach(function (b) { b.disabled = false; });
      say("Not saved: " + e.message);
    });
  }

  table.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList.contains("rereview")) return;
    e.preventDefault();
    var button = e.submitter;
    var verdict = button && button.value ? button.value : "label";
    if (verdict === "label" && !form.elements.label.value.trim()) {
      say("Type a label first.");
      form.elements.label.focus();
      return;
    }
    send(form, verdict);
  });

  table.addEventListener("click", function (e) {
    var row = e.target.closest("tr.suspect");
    if (row) select(rows.indexOf(row));
  });

  document.addEventListener("keydown", function (e) {
    if (table.dataset.keys !== "on" || e.ctrlKey || e.metaKey || e.altKey) return;
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.key === "j" || e.key === "ArrowDown") { select(current + 1); e.preventDefault(); return; }
    if (e.key === "k" || e.key === "ArrowUp") { select(current - 1); e.preventDefault(); return; }
    if (current < 0) return;
    var form = rows[current].querySelector("form.rereview");
    if (!form) return;
    if (e.key === "c" || e.key === "m") {
      e.preventDefault();
      send(form, e.key === "c" ? "confirm" : "model");
    } else if (e.key === "l") {
      e.preventDefault();
      form.elements.label.focus();
    }
  });

  var first = rows.findIndex(function (r) { return r.dataset.status === "open"; });
  if (first >= 0) select(first);
})();
