// A thumbnail still being rendered by a worker comes back as pending.svg (255 x 255, a
// size no real thumbnail has: their longer side is 256): ask once more after a few seconds.
(function () {
  "use strict";
  var PENDING_SIDE = 255, RETRY_MS = 4000;

  function retryIfPending(img) {
    if (!img || img.tagName !== "IMG" || img.dataset.thumbnailRetried) return;
    if (img.src.indexOf("/thumbnail.jpg") < 0) return;
    if (img.naturalWidth !== PENDING_SIDE || img.naturalHeight !== PENDING_SIDE) return;
    img.dataset.thumbnailRetried = "1";
    setTimeout(function () { img.src = img.src.split("?")[0] + "?retry=1"; }, RETRY_MS);
  }

  // Load events do not bubble, but they can be caught on the way down: this also covers the
  // review page's strips, which are built after the page loaded.
  document.addEventListener("load", function (event) { retryIfPending(event.target); }, true);
  Array.prototype.forEach.call(document.images, function (img) {
    if (img.complete) retryIfPending(img);
  });
})();
