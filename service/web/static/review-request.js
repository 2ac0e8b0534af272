// The review page's requests: JSON with the CSRF token and the job scope; errors in words.
(function () {
  "use strict";
  window.HerpscoreRequest = function (csrf, jobId) {
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
      return fetch(url, init).catch(function () {
        var e = new Error("Cannot reach the server; that was not saved. Try again.");
        e.status = 0;
        throw e;
      }).then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("You were logged out."); }
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (!r.ok) { throw humanError(r.status, data); }
          return data;
        });
      });
    }

    // Server messages may name internal ids; the reviewer gets what happened and what comes next.
    function humanError(status, data) {
      var details = data.details || {};
      var message;
      if (status === 409 && details.status) message = "This photo was already decided by someone else; here is the next one.";
      else if (status === 409 && details.claimed_by) message = "Another reviewer is working on this photo; here is the next one.";
      else if (status === 409 || status === 400 || status === 403) message = capitalise(data.message || "That was not accepted.");
      else if (status === 404) message = "That photo is no longer in the queue; here is the next one.";
      else message = "Something went wrong on the server (HTTP " + status + "); try again.";
      var e = new Error(message);
      e.status = status;
      return e;
    }

    function capitalise(s) { return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : "."); }

    return request;
  };
})();
