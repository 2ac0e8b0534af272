// Forms that change something hard to take back ask first: <form data-confirm="Question?">.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var form = e.target.closest && e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
  }, true);
})();
