// Live job progress (polls each [data-job-progress] block) and contact-sheet bulk selection.
(function () {
  "use strict";
  var FINISHED = ["done", "failed", "cancelled"];
  var POLL_MS = 1500;

  function setField(block, name, value) {
    var el = block.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = value === null || value === undefined ? "–" : value;
  }

  function render(block, job) {
    var p = job.progress;
    var pct = Math.round(p.fraction_done * 1000) / 10;
    var bar = block.querySelector(".bar");
    bar.setAttribute("aria-valuenow", pct);
    bar.firstElementChild.style.width = pct + "%";
    var status = block.querySelector('[data-field="status"]');
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    setField(block, "done", p.scored + p.failed);
    setField(block, "total", p.total);
    ["scored", "failed", "routed_to_review", "images_per_second"].forEach(function (k) {
      setField(block, k, p[k]);
    });
    setField(block, "eta_seconds", p.eta_seconds === null ? null : p.eta_seconds + " s");
    var scanning = block.querySelector('[data-field="scanning"]');
    if (scanning && p.scan_complete) scanning.remove();
  }

  function watch(block) {
    var url = block.getAttribute("data-job-progress");
    var startStatus = block.getAttribute("data-status");
    if (FINISHED.indexOf(startStatus) !== -1) return;
    var timer = null;
    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (job) {
          render(block, job);
          refreshSheet(job.progress.scored + job.progress.failed);
          if (FINISHED.indexOf(job.status) !== -1) {
            var note = document.querySelector("[data-refresh]");
            if (note) note.hidden = false;
            document.querySelectorAll("[data-cancel]").forEach(function (f) { f.remove(); });
            return;
          }
          timer = setTimeout(poll, POLL_MS);
        })
        .catch(function () { timer = setTimeout(poll, POLL_MS * 4); });
    }
    timer = setTimeout(poll, POLL_MS);
    window.addEventListener("pagehide", function () { clearTimeout(timer); });
  }

  // A running job's contact sheet fills in as images are scored: the page's own sheet is
  // fetched again when the count moved (never while the user has images selected).
  var sheetBusy = false, sheetAt = 0, SHEET_MIN_MS = 4000;
  function refreshSheet(count) {
    var sheet = document.getElementById("sheet");
    if (!sheet || !sheet.hasAttribute("data-live-sheet") || sheetBusy) return;
    if (count <= Number(sheet.getAttribute("data-count") || 0)) return;
    if (Date.now() - sheetAt < SHEET_MIN_MS) return;
    if (sheet.querySelector('input[name="image_ids"]:checked')) return;
    sheetBusy = true;
    sheetAt = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("sheet");
        if (!fresh) return;
        sheet.innerHTML = fresh.innerHTML;
        sheet.setAttribute("data-count", count);
        sheet.querySelectorAll("form[data-bulk]").forEach(bulk);
      })
      .catch(function () {})
      .finally(function () { sheetBusy = false; });
  }

  function bulk(form) {
    var boxes = form.querySelectorAll('input[name="image_ids"]');
    var all = form.querySelector("[data-select-all]");
    var button = form.querySelector("[data-confirm-selected]");
    var count = form.querySelector("[data-selected-count]");
    function update() {
      var n = 0;
      boxes.forEach(function (b) {
        if (b.checked) n++;
        b.closest(".tile").classList.toggle("selected", b.checked);
      });
      if (count) count.textContent = n;
      if (button) button.disabled = n === 0;
      if (all) {
        all.checked = n > 0 && n === boxes.length;
        all.indeterminate = n > 0 && n < boxes.length;
      }
    }
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    if (all) all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      update();
    });
    update();
  }

  // No style attributes or inline handlers in the markup (the CSP forbids them): the bar's
  // width comes from aria-valuenow, a form's confirmation from data-confirm.
  document.querySelectorAll("[data-job-progress] .bar").forEach(function (bar) {
    bar.firstElementChild.style.width = bar.getAttribute("aria-valuenow") + "%";
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  document.querySelectorAll("[data-job-progress]").forEach(watch);
  document.querySelectorAll("form[data-bulk]").forEach(bulk);
})();
