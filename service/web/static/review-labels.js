// Label matching for the review page's search, folded as service/labels.py label_key folds.
(function () {
  "use strict";
  // Case, accents, and runs of spaces, hyphens and underscores do not count.
  function key(s) {
    return s.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase().replace(/[\s_-]+/g, " ").trim();
  }

  // 2: the label starts with the query; 1: contains it, or every typed word starts a word of
  // the label in order ("cro atr" finds "crotalus atrox"); 0: no match. Both are keys.
  function matches(labelKey, q) {
    if (labelKey.indexOf(q) !== -1) return labelKey.indexOf(q) === 0 ? 2 : 1;
    var words = labelKey.split(" "), at = 0;
    var ok = q.split(" ").every(function (w) {
      while (at < words.length && words[at].indexOf(w) !== 0) at++;
      return at++ < words.length;
    });
    return ok ? 1 : 0;
  }

  // Edits (insert, delete, replace) between two keys, or limit + 1 once it is over limit.
  function distance(a, b, limit) {
    if (Math.abs(a.length - b.length) > limit) return limit + 1;
    var prev = [], cur, i, j;
    for (j = 0; j <= b.length; j++) prev.push(j);
    for (i = 1; i <= a.length; i++) {
      cur = [i];
      var low = i;
      for (j = 1; j <= b.length; j++) {
        cur.push(Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
        low = Math.min(low, cur[j]);
      }
      if (low > limit) return limit + 1;
      prev = cur;
    }
    return prev[b.length];
  }

  // A typo's worth: one slip in a short name, two in a longer one.
  function tolerance(q) { return q.length >= 9 ? 2 : q.length >= 5 ? 1 : 0; }

  // The known labels the typed text finds, best first: by the label itself or by its common or
  // scientific name (names: {label: {common_name, scientific_name}}). `near` says that one of
  // them is the same name or a typo away from it, so no new label should be offered.
  function search(labels, names, typed) {
    var q = key(typed || ""), first = [], rest = [], fuzzy = [], near = false;
    if (!q) return { choices: [], near: false };
    var limit = tolerance(q);
    labels.forEach(function (label) {
      var n = names[label] || {};
      var keys = [label, n.common_name || "", n.scientific_name || ""]
        .filter(Boolean).map(key);
      var best = Math.max.apply(null, keys.map(function (k) { return matches(k, q); }));
      var close = keys.some(function (k) { return distance(k, q, limit) <= limit; });
      if (close) near = true;
      if (best === 2) first.push(label); else if (best === 1) rest.push(label);
      else if (close) fuzzy.push(label);
    });
    return { choices: first.concat(rest, fuzzy), near: near };
  }

  window.HerpscoreLabels = { key: key, matches: matches, distance: distance, search: search };
})();
