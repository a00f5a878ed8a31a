/* The layer x head grid: statistic and scope tabs, cells, legend. */
var STATS = { s_img: "S_img (attention on the image)", entropy: "spatial entropy (lower = more focused)", frequency: "selection frequency" };
function tabs(box, items, cur, onpick) {
  box.innerHTML = "";
  items.forEach(function (it) {
    var b = el("button", { type: "button", cls: "tab" + (it[0] === cur ? " on" : ""), "data-value": it[0], text: it[1] });
    if (it[2]) b.disabled = true;
    b.addEventListener("click", function () { onpick(it[0]); });
    box.appendChild(b);
  });
}
function gridValues() {
  var G = D.grid_mean || {}, s = S[st.sample];
  if (st.scope === "mean" && st.stat === "frequency")
    return { v: f16(G.frequency), counts: G.n_samples, label: "in how many of the " + G.n_samples + " samples the head is among the k lowest-entropy eligible heads (" + G.source + ")" };
  if (st.scope === "mean") return { v: f16(G[st.stat]), label: "mean over " + G.n_samples + " samples (" + G.source + ")" };
  if (!s) return { v: null, label: "" };
  if (st.stat === "frequency") {
    var v = new Float64Array(L * H);
    (s.chosen || []).forEach(function (i) { v[i] = 1; });
    return { v: v, label: "chosen in sample " + s.id + " (1 = among its k lowest-entropy eligible heads)" };
  }
  return { v: memo(st.sample + ":" + st.stat, function () { return f16(s[st.stat]); }), label: "sample " + s.id };
}
function renderGrid() {
  tabs($("stat-tabs"), Object.keys(STATS).map(function (k) { return [k, k === "s_img" ? "S_img" : k]; }), st.stat, function (k) { st.stat = k; renderGrid(); });
  tabs($("scope-tabs"), [["mean", "mean over samples"], ["sample", "this sample", !S.length]], st.scope, function (k) { st.scope = k; renderGrid(); });
  var box = $("head-grid"), G = D.grid_mean || {};
  box.innerHTML = "";
  if (!L || !H) return;
  var gv = gridValues(), v = gv.v, lo = Infinity, hi = -Infinity;
  if (v) for (var i = 0; i < v.length; i++) if (isFinite(v[i])) { lo = Math.min(lo, v[i]); hi = Math.max(hi, v[i]); }
  var bw = H <= 16 ? 2 : 1, cell = Math.max(5, Math.min(40, Math.floor(340 / H) - 2 * bw - 1));
  box.style.setProperty("--cell", cell + "px");
  box.style.setProperty("--bw", bw + "px");
  var excl = G.excluded_layers || [], eligible = G.eligible || [];
  var t = el("table", { id: "head-grid-table" }), hr = el("tr", null, [el("th", { text: "L \\ H" })]);
  HEADS.forEach(function (h, j) {  // many heads: labels every 4th / 8th column, drawn over the next cells (no width of their own)
    var lbl = (H <= 16 || j % (H <= 32 ? 4 : 8) === 0) ? String(h) : "";
    hr.appendChild(el("th", null, [H <= 16 ? lbl : el("span", { cls: "lbl", text: lbl })]));
  });
  t.appendChild(hr);
  LAYERS.forEach(function (l, li) {
    var tr = el("tr", null, [el("th", { text: (L <= 16 || li % 4 === 0) ? String(l) : "" })]);
    HEADS.forEach(function (h, hi_) {
      var idx = li * H + hi_, val = v ? v[idx] : NaN, tnorm = hi > lo ? (val - lo) / (hi - lo) : 0.5;
      var c = isFinite(val) ? viridis(tnorm) : [190, 190, 190];
      var cls = (isSelected(l, h) ? "sel " : "") + (l === st.layer && h === st.head ? "cur " : "") + (excl.indexOf(li) >= 0 ? "excl" : "");
      var what = gv.counts !== undefined && isFinite(val) ? "selected in " + Math.round(val) + " of " + gv.counts + " samples (" + fmt(val / gv.counts, 2) + ")"
        : STATS[st.stat] + " " + fmt(val, 4);
      var tip = headName(l, h) + ": " + what + (isSelected(l, h) ? " (selected)" : "") + (excl.indexOf(li) >= 0 ? " (excluded layer)" : eligible[idx] ? " (eligible)" : "");
      var td = el("td", { "data-layer": String(l), "data-head": String(h), cls: cls.trim(), title: tip, "aria-label": tip,
        tabindex: l === st.layer && h === st.head ? "0" : "-1" });
      td.style.background = rgb(c);
      td.style.color = tnorm > 0.6 ? "#000" : "#fff";
      if (cell >= 30 && isFinite(val)) td.textContent = st.stat === "frequency" && st.scope === "mean" ? String(Math.round(val)) : val.toFixed(2);
      td.addEventListener("click", function () { pickHead(l, h); });
      tr.appendChild(td);
    });
    t.appendChild(tr);
  });
  box.appendChild(t);
  var lg = $("grid-legend");
  lg.innerHTML = "";
  var cv = el("canvas", { width: 160, height: 10, id: "grid-cbar" });
  var cx = cv.getContext("2d");
  for (var x = 0; x < 160; x++) { cx.fillStyle = rgb(viridis(x / 159)); cx.fillRect(x, 0, 1, 10); }
  var ends = gv.counts !== undefined ? [Math.round(lo) + " ", " " + Math.round(hi) + " of " + gv.counts + " samples"] : [fmt(lo, 3) + " ", " " + fmt(hi, 3)];
  lg.appendChild(el("div", { cls: "hint" }, [el("span", { id: "grid-cbar-lo", text: isFinite(lo) ? ends[0] : "" }), cv,
    el("span", { id: "grid-cbar-hi", text: isFinite(hi) ? ends[1] : "" })]));
  var how = ". Red border: selected heads; hatched: excluded layers; grey: no finite value. " +
    "Keyboard: Tab to the grid, arrow keys move, Enter or Space shows that head.";
  lg.appendChild(el("div", { cls: "hint", id: "grid-cbar-label", text: "colour: " + STATS[st.stat] + ", " + gv.label + how }));
}
