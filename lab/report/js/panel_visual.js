/* Panel: the visual heads named by the rule of docs/visual_heads.md (visual_heads.json "named"). */
var VISUAL_ROWS = 60;  // rows drawn; the rest are counted below the table
function renderVisualHeads() {
  var V = D.visual_heads;
  if (!V) return;
  $("visual-section").hidden = false;
  var box = $("visual-heads"), heads = V.heads || [], s = V.settings || {};
  var kinds = ["localization", "global", "focused"].map(function (k) {
    return heads.filter(function (h) { return h.kind === k; }).length + " " + k;
  });
  box.appendChild(el("p", { id: "visual-summary", text: heads.length + " visual heads (" + kinds.join(", ") + "): S_img \u2265 " +
    s.min_ratio + " in \u2265 " + Math.round(100 * s.min_share) + "% of " + V.n_samples + " samples" + (s.k ? ", the first " + s.k : "") }));
  var t = el("table", { id: "visual-table" }, [headerRow(["rank", "head", "kind", "samples", "mean S_img", "concentration"])]);
  heads.slice(0, VISUAL_ROWS).forEach(function (h) {
    var tr = el("tr", { "data-head-name": headName(h.layer, h.head), "data-kind": h.kind }, [el("td", { text: String(h.rank) }),
      el("td", { text: headName(h.layer, h.head) }), el("td", { text: h.kind }),
      el("td", { cls: "num", text: h.count + " of " + V.n_samples }), el("td", { cls: "num", text: fmt(h.ratio) }),
      el("td", { cls: "num", text: fmt(h.concentration) })]);
    tr.style.cursor = "pointer";
    tr.addEventListener("click", function () { pickHead(h.layer, h.head); });
    t.appendChild(tr);
  });
  box.appendChild(t);
  if (heads.length > VISUAL_ROWS) box.appendChild(el("p", { cls: "hint", text: (heads.length - VISUAL_ROWS) + " more in visual_heads.json" }));
  var groups = Object.keys(V.by_group || {});
  if (groups.length) {
    box.appendChild(el("p", { cls: "hint", id: "visual-groups", text: "per group: " + groups.map(function (g) {
      var b = V.by_group[g]; return g + " " + b.heads.length + " (n=" + b.n_samples + ")"; }).join("; ") }));
  }
  box.appendChild(el("p", { cls: "hint", text: "rule: " + V.rule }));
}
