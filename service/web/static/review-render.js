// The review page's pieces that are pure rendering: labels and times in words, and the list
// items for the suggestions, the folder or burst strip and the recent decisions.
(function () {
  "use strict";

  function pretty(label) { return (label || "").replace(/_/g, " "); }

  function describe(a) {
    return a.decision === "label" ? pretty(a.label) : { unknown: "unknown species", unusable: "not usable", skip: "skipped" }[a.decision];
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

  // The numbered suggestions; `chosen` is marked, a click calls onPick(label).
  function topkItems(topk, chosen, onPick) {
    return topk.slice(0, 9).map(function (t) {
      var li = document.createElement("li");
      if (t.label === chosen) li.className = "chosen";
      if (t.venomous) li.classList.add("venomous");
      var pct = Math.round(t.confidence * 1000) / 10;
      li.innerHTML = '<kbd></kbd><span class="name"></span><span class="pct"></span>' +
        '<span class="confbar" aria-hidden="true"><span></span></span>';
      li.children[0].textContent = String(t.rank);
      li.children[1].textContent = pretty(t.label) + (t.venomous ? " \u26A0 VENOMOUS" : "");
      li.title = t.label;
      li.children[2].textContent = pct.toFixed(1) + " %";
      li.children[3].firstChild.style.width = Math.max(pct, 0.5) + "%";
      li.setAttribute("aria-label", "Press " + t.rank + ": " + t.label + (t.venomous ? ", venomous" : "") + ", " + pct.toFixed(1) + " percent");
      li.addEventListener("click", function () { onPick(t.label); });
      return li;
    });
  }

  // The photos of the same folder or burst, with the human's label where there is one.
  function siblingItems(siblings) {
    return siblings.map(function (s) {
      var li = document.createElement("li");
      if (s.current) { li.className = "current"; li.setAttribute("aria-current", "true"); }
      var img = document.createElement("img");
      img.src = s.thumbnail_url;
      img.alt = "";
      img.loading = "lazy";
      var cap = document.createElement("span");
      cap.className = "cap";
      var human = s.human_decision === "label" ? s.human_label : s.human_decision;
      cap.textContent = human ? "✓ " + pretty(human) : pretty(s.machine_label);
      if (human) cap.classList.add("human");
      li.title = s.rel_path + (human ? " — reviewed: " + human : " — model: " + (s.machine_label || "none"));
      li.append(img, cap);
      return li;
    });
  }

  // The reviewer's recent decisions, newest first; index `shown` is on screen, a click
  // calls onGo(index).
  function recentItems(recent, shown, onGo) {
    return recent.map(function (a, i) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "recent-item" + (i === shown ? " shown" : "");
      b.setAttribute("data-annotation-id", a.id);
      b.title = (a.name || "photo") + ": " + describe(a) + " — click to change";
      var img = document.createElement("img");
      img.src = a.thumbnail_url;
      img.alt = "";
      var cap = document.createElement("span");
      cap.textContent = describe(a);
      b.append(img, cap);
      b.addEventListener("click", function () { onGo(i); });
      li.append(b);
      return li;
    });
  }

  window.HerpscoreReviewRender = {
    pretty: pretty, describe: describe, placeAndTime: placeAndTime,
    topkItems: topkItems, siblingItems: siblingItems, recentItems: recentItems,
  };
})();
