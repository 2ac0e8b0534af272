// Zoom and pan of the review page's photo: wheel, drag, double-click; keys call zoomBy/reset.
(function () {
  "use strict";
  window.HerpscoreZoom = function (viewer, photo, levelEl, onZoomIn) {
    var state = { zoom: 1, x: 0, y: 0 }, drag = null;

    function apply() {
      photo.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
      levelEl.textContent = state.zoom === 1 ? "" : Math.round(state.zoom * 100) + " %";
    }

    function zoomBy(factor, cx, cy) {
      var rect = viewer.getBoundingClientRect();
      if (cx === undefined) { cx = rect.width / 2; cy = rect.height / 2; }
      var z = Math.min(16, Math.max(1, state.zoom * factor));
      if (z > 1) onZoomIn();  // zooming in asks for the full resolution
      var k = z / state.zoom;
      state.x = cx - (cx - state.x) * k;
      state.y = cy - (cy - state.y) * k;
      state.zoom = z;
      if (z === 1) { state.x = 0; state.y = 0; }
      apply();
    }

    function reset() { state.zoom = 1; state.x = 0; state.y = 0; apply(); }

    viewer.addEventListener("wheel", function (e) {
      e.preventDefault();
      var rect = viewer.getBoundingClientRect();
      zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - rect.left, e.clientY - rect.top);
    }, { passive: false });
    viewer.addEventListener("pointerdown", function (e) {
      if (e.button !== 0 || e.target.closest("button")) return;
      drag = { x: e.clientX - state.x, y: e.clientY - state.y };
      viewer.setPointerCapture(e.pointerId);
      viewer.classList.add("dragging");
    });
    viewer.addEventListener("pointermove", function (e) {
      if (!drag) return;
      state.x = e.clientX - drag.x;
      state.y = e.clientY - drag.y;
      apply();
    });
    ["pointerup", "pointercancel"].forEach(function (type) {
      viewer.addEventListener(type, function () { drag = null; viewer.classList.remove("dragging"); });
    });
    viewer.addEventListener("dblclick", reset);
    return { zoomBy: zoomBy, reset: reset };
  };
})();
