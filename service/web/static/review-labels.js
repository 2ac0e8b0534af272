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

  window.HerpscoreLabels = { key: key, matches: matches };
})();
