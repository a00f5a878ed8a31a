/* Panel: the selected heads and the elbow plot. */
function renderHeads() {
  var HD = D.heads || {}, sel = HD.selected || [];
  var t = el("table", { id: "selected-heads" }, [headerRow(["rank", "head", "frequency", "mean S_img", "mean entropy"])]);
  sel.forEach(function (d, i) {
    var tr = el("tr", { "data-head-name": headName(d.layer, d.head) }, [el("td", { text: String(i + 1) }), el("td", { text: headName(d.layer, d.head) }),
      el("td", { cls: "num", text: d.frequency === undefined ? "" : d.frequency + " of " + HD.n_samples + " samples (" + fmt(d.frequency_ratio, 2) + ")" }),
      el("td", { cls: "num", text: fmt(d.mean_s_img) }), el("td", { cls: "num", text: fmt(d.mean_entropy) })]);
    tr.style.cursor = "pointer";
    tr.addEventListener("click", function () { pickHead(d.layer, d.head); });
    t.appendChild(tr);
  });
  var box = $("heads-table");
  box.appendChild(t);
  var s = HD.settings || {};
  box.appendChild(el("p", { cls: "hint", text: "source: " + HD.source + (HD.threshold != null ? "; criterion-1 threshold (elbow on mean S_img) " + fmt(HD.threshold, 4) : "") +
    (s.k ? "; k=" + s.k + " lowest-entropy heads per sample" : "") + (s.exclude_layers ? "; excluded layers [" + s.exclude_layers.join(", ") + "]" : "") }));
  renderElbow();
}
function renderElbow() {
  var E = (D.grid_mean || {}).elbow;
  if (!E || !E.values.length) return;
  var W = 380, Hh = 230, m = { l: 46, r: 10, t: 10, b: 36 }, v = E.values, n = v.length;
  var lo = Math.min.apply(null, v.concat([E.threshold])), hi = Math.max.apply(null, v.concat([E.threshold]));
  if (!(hi > lo)) hi = lo + 1e-9;
  function x(i) { return m.l + (n > 1 ? i / (n - 1) : 0.5) * (W - m.l - m.r); }
  function y(val) { return m.t + (1 - (val - lo) / (hi - lo)) * (Hh - m.t - m.b); }
  var ns = "http://www.w3.org/2000/svg";
  function s(tag, a, text) { var e = document.createElementNS(ns, tag); for (var k in a) e.setAttribute(k, a[k]); if (text) e.textContent = text; return e; }
  var svg = s("svg", { width: W, height: Hh, viewBox: "0 0 " + W + " " + Hh, id: "elbow-svg", role: "img", "aria-label": "sorted mean S_img per head" });
  svg.appendChild(s("line", { x1: m.l, y1: Hh - m.b, x2: W - m.r, y2: Hh - m.b, stroke: "#888" }));
  svg.appendChild(s("line", { x1: m.l, y1: m.t, x2: m.l, y2: Hh - m.b, stroke: "#888" }));
  [lo, (lo + hi) / 2, hi].forEach(function (t) {
    svg.appendChild(s("text", { x: m.l - 4, y: y(t) + 3, "text-anchor": "end", "font-size": 10 }, t.toFixed(2)));
  });
  [0, n - 1].forEach(function (i) { svg.appendChild(s("text", { x: x(i), y: Hh - m.b + 12, "text-anchor": "middle", "font-size": 10 }, String(i))); });
  svg.appendChild(s("text", { x: (W + m.l) / 2, y: Hh - 6, "text-anchor": "middle", "font-size": 11 }, "rank (heads of the included layers, sorted)"));
  svg.appendChild(s("text", { x: 11, y: (Hh - m.b) / 2, "text-anchor": "middle", "font-size": 11, transform: "rotate(-90 11 " + (Hh - m.b) / 2 + ")" }, "mean S_img"));
  svg.appendChild(s("polyline", { points: v.map(function (val, i) { return x(i) + "," + y(val); }).join(" "), fill: "none", stroke: "#1f77b4", "stroke-width": 1.8 }));
  v.forEach(function (val, i) { svg.appendChild(s("circle", { cx: x(i), cy: y(val), r: 2.2, fill: "#1f77b4" })); });
  svg.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: y(E.threshold), y2: y(E.threshold), stroke: "#d62728", "stroke-dasharray": "5 3" }));
  var above = v.filter(function (val) { return val >= E.threshold; }).length;
  var legend = "red dashed: criterion-1 threshold " + E.threshold.toFixed(3) + " (" + above + " of " + n + " heads \u2265)";
  if (E.knee_index != null && E.knee_index >= 0 && E.knee_index < n) {
    svg.appendChild(s("circle", { cx: x(E.knee_index), cy: y(v[E.knee_index]), r: 5, fill: "none", stroke: "#2ca02c", "stroke-width": 2 }));
    legend += "; green circle: knee at rank " + E.knee_index + " (" + (E.method || "") + ")";
  }
  $("elbow").appendChild(el("h3", { text: "Elbow: sorted mean S_img" }));
  $("elbow").appendChild(svg);
  $("elbow").appendChild(el("p", { cls: "hint", id: "elbow-legend", text: legend }));
}
