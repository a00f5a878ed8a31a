/* Panels: the stage=evaluate (Grounding) and stage=ablate tables, with their stale badges. */
function metricCell(key, v, std) {
  var td = el("td", { cls: "num" }, [el("span", { "data-metric": key, text: fmt(v) })]);
  if (std !== undefined && std !== null) td.appendChild(el("span", { cls: "std", "data-metric": key + "_std", text: " \u00b1 " + fmt(std) }));
  return td;
}
function staleBadge(key, section, box) {  // lab/report/staleness.py: a table not about the current heads.json
  var x = (D.stale || {})[key];
  if (!x) return false;
  section.classList.add("stale");
  section.querySelector("h2").appendChild(el("span", { cls: "badge", "data-stale": key, text: "stale", title: x.sentence }));
  box.appendChild(el("p", { cls: "stale-note", id: key + "-stale", role: "note", text: x.sentence }));
  return true;
}
function renderMetrics() {
  var M = D.metrics;
  if (!M) return;
  $("metrics-section").hidden = false;
  staleBadge("metrics", $("metrics-section"), $("metrics"));
  var k = (M.heads || []).length, rnd = M.random_heads || {};
  var t = el("table", { id: "metrics-table" }, [headerRow(["head set", "Acc@0.5", "mIoU", "pointing", "n"])]);
  [["selected_heads", "selected heads (" + (M.heads || []).map(function (p) { return headName(p[0], p[1]); }).join(", ") + ")"],
   ["all_heads_mean", "mean of all heads"], ["random_heads", k + " random heads (" + (rnd.draws || 0) + " draws, mean \u00b1 std)"]].forEach(function (r) {
    var d = M[r[0]] || {}, isR = r[0] === "random_heads";
    t.appendChild(el("tr", { "data-row": r[0] }, [el("td", { text: r[1] }), metricCell(r[0] + ".acc@0.5", d["acc@0.5"], isR ? d["acc@0.5_std"] : undefined),
      metricCell(r[0] + ".miou", d.miou, isR ? d.miou_std : undefined), metricCell(r[0] + ".pointing", d.pointing, isR ? d.pointing_std : undefined),
      el("td", { cls: "num", "data-metric": r[0] + ".n", text: String(d.n) })]));
  });
  $("metrics").appendChild(t);
  if ((M.selected_heads || {}).mask) {  // grounding.output=mask|both: mask metrics (lab/masks.py)
    var mk = ["miou", "ciou", "p@0.5", "p@0.7", "p@0.9"], mt = el("table", { id: "mask-metrics-table" }, [headerRow(["masks", "mIoU", "cIoU", "P@0.5", "P@0.7", "P@0.9"])]);
    ["selected_heads", "all_heads_mean", "random_heads"].forEach(function (n) {
      var d = (M[n] || {}).mask || {}, isR = n === "random_heads";
      mt.appendChild(el("tr", null, [el("td", { text: n.replace(/_/g, " ") })].concat(mk.map(function (key) { return metricCell(n + ".mask." + key, d[key], isR ? d[key + "_std"] : undefined); }))));
    });
    $("metrics").appendChild(mt);
  }
  var s = M.settings || {};
  $("metrics").appendChild(el("p", { cls: "hint", text: "heads: " + (M.heads_source || "?") + "; smoothing sigma " + fmt(s.sigma, 3) + " cells, hull " + s.hull +
    ", seed " + s.seed + "; failed rows " + M.failed + ". Acc@0.5: share of samples whose box has IoU \u2265 0.5 with the ground truth; pointing: the combined map's peak falls inside it." }));
}
function renderAblation() {
  var A = D.ablation;
  if (!A) return;
  $("ablation-section").hidden = false;
  staleBadge("ablation", $("ablation-section"), $("ablation"));
  var b = A.baseline || {}, s = A.selected_heads || {}, r = A.random_heads || {};
  var t = el("table", { id: "ablation-table" }, [headerRow(["condition", "answer accuracy", "answers changed vs baseline", "n"])]);
  var rch = (r.draws || []).map(function (d) { return d.changed_vs_baseline; });
  var rchMean = rch.length ? rch.reduce(function (a, c) { return a + c; }, 0) / rch.length : null;
  [["baseline", "no intervention", b.accuracy, null, b.n, null],
   ["selected_heads", "selected heads masked (" + (s.heads || []).map(function (p) { return headName(p[0], p[1]); }).join(", ") + ")", s.accuracy, s.changed_vs_baseline, s.n, null],
   ["random_heads", (s.heads || []).length + " random heads masked (" + (r.draws || []).length + " draws, mean \u00b1 std; min " +
     fmt(r.min) + ", max " + fmt(r.max) + ")", r.mean, rchMean, r.n, r.std]].forEach(function (row) {
    var acc = el("td", { cls: "num" }, [el("span", { "data-metric": "ablation." + row[0] + ".accuracy", text: fmt(row[2]) })]);
    if (row[5] != null) acc.appendChild(el("span", { cls: "std", "data-metric": "ablation." + row[0] + ".std", text: " \u00b1 " + fmt(row[5]) }));
    t.appendChild(el("tr", null, [el("td", { text: row[1] }), acc, el("td", { cls: "num", text: row[3] == null ? "-" : fmt(row[3]) }), el("td", { cls: "num", text: String(row[4]) })]));
  });
  $("ablation").appendChild(t);
  var se = A.settings || {};
  $("ablation").appendChild(el("p", { cls: "hint", text: "match " + se.match + ", mask " + se.maskout_mode + ", steps " + se.steps +
    ", max_new_tokens " + se.max_new_tokens + ", seed " + se.seed + (r.note ? "; " + r.note : "") }));
}
