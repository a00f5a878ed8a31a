/* The map view: the image, the current map on its token grid, boxes, masks, colour bar, controls. */
var images = {};
function imageOf(i) {
  if (!images[i]) { var im = new Image(); im.onload = function () { if (st.sample === i) drawMap(); }; im.src = S[i].image; images[i] = im; }
  return images[i];
}
var overlays = {};
function overlayOf(i, key) {  // stage=evaluate's mask PNGs (gt_mask, pred_mask) as images
  var k = key + i;
  if (!overlays[k]) { var im = new Image(); im.onload = function () { if (st.sample === i) drawMap(); }; im.src = S[i][key]; overlays[k] = im; }
  return overlays[k];
}
function nRows(s) { return s.maps ? (s.row_labels || []).length : 1; }
function sources(s) {
  var out = [["head", "clicked head"]];
  out.push(["combined", "combined (selected heads)", !s.combined]);
  if (s.tokens) { out.push(["selected_mean", "mean of selected heads", !s.tokens.selected]); out.push(["all_mean", "mean of all heads"]); }
  if (s.tokens && s.tokens.weighted) out.push(["weighted_mean", "all heads, VLM-Visualizer weighting"]);
  if (s.tokens && s.tokens.vision) out.push(["vision_mean", "through the vision tower (VLM-Visualizer)"]);
  return out;
}
// values of the current map: {get(cellIndex, tokenIndex), onGrid, title, cbar}
function currentMap(s) {
  var row = st.row === null ? s.row : st.row, tok = (s.row_labels || [])[row];
  var rowTxt = (s.row_labels || []).length > 1 ? " at " + (s.query_mode === "generated" ? "generated token " : "query row ") + row + " " + JSON.stringify(tok) : "";
  if (st.source === "combined") {
    if (!s.combined) return { err: "no combined map: " + (s.note || "no selected heads") };
    var c = memo("comb" + st.sample, function () { return deq(s.combined); });
    return { onGrid: s.combined.grid, val: function (i) { return c.q[i] / 255 * c.scale[0]; }, max: 1, fixed: true,
      title: "combined map of the selected heads (Gaussian sigma " + fmt(s.combined.sigma, 2) + " cells)",
      cbar: "combined attention of the selected heads, smoothed, normalised to [0, 1]" };
  }
  var TOKEN_SOURCES = {
    selected_mean: ["selected", "mean of the selected heads", "attention weight, mean of the selected heads"],
    all_mean: ["all", "mean of all heads", "attention weight, mean of all heads"],
    weighted_mean: ["weighted", "all heads, VLM-Visualizer weighting (first-token column zeroed, renormalised per layer)",
                    "renormalised attention weight, mean over layers and heads"],
    vision_mean: ["vision", "through the vision tower (VLM-Visualizer)", "share of the map on each patch (sums to 1)"] };
  if (TOKEN_SOURCES[st.source] && s.tokens && s.tokens[TOKEN_SOURCES[st.source][0]]) {
    var ts = TOKEN_SOURCES[st.source], key = ts[0], enc = s.tokens[key];
    var m = memo("tok" + key + st.sample, function () { return deq(enc); });
    var V = m.V, base = row * V, sc = m.scale[row];
    return { val: function (i) { return m.q[base + i] / 255 * sc; }, max: sc, title: ts[1] + rowTxt, cbar: ts[2] + rowTxt };
  }
  var mp = memo("maps" + st.sample, function () { return deq(s.maps); });
  var li = axisL(st.layer), hi = axisH(st.head), V2 = mp.V, mapIdx = -1, rr = s.maps.rows.indexOf(row);
  if (rr < 0) return { err: "only the analysed query row of this sample is stored (report.map_budget_mb)" };
  if (s.maps.level === "selected") {
    var k = s.maps.heads.findIndex(function (p) { return p[0] === li && p[1] === hi; });
    if (k < 0) return { err: "only the selected heads' maps are stored for this sample (report.map_budget_mb); pick a selected head" };
    mapIdx = rr * s.maps.heads.length + k;
  } else {
    mapIdx = (rr * L + li) * H + hi;
  }
  var sc2 = mp.scale[mapIdx], b2 = mapIdx * V2;
  return { val: function (i) { return mp.q[b2 + i] / 255 * sc2; }, max: sc2, title: headName(st.layer, st.head) + rowTxt,
    cbar: "attention weight of " + headName(st.layer, st.head) + " (share of the query's attention)" + rowTxt };
}
function drawMap() {
  var s = S[st.sample], view = $("map-view"), cv = $("map-canvas");
  view.setAttribute("data-map-sample", String(st.sample));
  view.setAttribute("data-map-layer", String(st.layer));
  view.setAttribute("data-map-head", String(st.head));
  view.setAttribute("data-map-source", st.source);
  if (!s) return drawNoSample(view, cv);
  view.setAttribute("data-map-row", String(st.row === null ? s.row : st.row));
  var f = mapFrame(s, view, cv), ctx = f.ctx;
  var im = imageOf(st.sample), ready = im.complete && im.naturalWidth > 0;
  if (ready) ctx.drawImage(im, 0, 0, f.W, f.Hh);
  var m = currentMap(s);
  $("map-title").textContent = "Map: sample " + s.id + (m.title ? " \u2014 " + m.title : "");
  var top = m.err ? 0 : (m.fixed ? 1 : m.max), opacity = +$("opacity-slider").value / 100, only = $("image-only").checked;
  view.setAttribute("data-image-only", String(only));
  view.setAttribute("data-opacity", String(opacity));
  if (only) {
    view.setAttribute("data-state", ready ? "ready" : "loading");
    $("map-legend").textContent = "image only: the map, boxes and masks are hidden (untick \u201cimage only\u201d to see them)";
    return;
  }
  if (!m.err) paintCells(f, m, top, opacity);
  outlineGrid(f);
  var legend = paintMarks(f, s);
  $("map-legend").textContent = m.err ? m.err : legend.join("; ");
  drawColourBar(m, top);
  cv.onmousemove = function (e) { if (!m.err) $("map-hover").textContent = hoverText(f, m, e); };
  view.setAttribute("data-state", ready ? "ready" : "loading");
}
function drawNoSample(view, cv) {
  view.setAttribute("data-state", "empty");
  var c0 = cv.getContext("2d");
  c0.setTransform(1, 0, 0, 1, 0, 0);
  c0.clearRect(0, 0, cv.width, cv.height);
  $("map-title").textContent = "Map: no sample shown";
  $("map-legend").textContent = S.length ? "the filter hides every sample" : "no sample in this report";
  $("map-hover").textContent = "";
}
// the canvas sized to the image and the grid's box (which may stick out of it: padding), drawn in image pixels
function mapFrame(s, view, cv) {
  var gname = st.source === "combined" && s.combined ? s.combined.grid : (st.grid || s.grid);
  var g = s.grids.filter(function (x) { return x.name === gname; })[0] || s.grids[s.grids.length - 1];
  var W = s.image_size[0], Hh = s.image_size[1], b = g.box;
  var ex0 = Math.min(0, b[0]), ey0 = Math.min(0, b[1]), ex1 = Math.max(W, b[2]), ey1 = Math.max(Hh, b[3]);
  var sc = Math.min(440 / (ex1 - ex0), 440 / (ey1 - ey0));
  cv.width = Math.round((ex1 - ex0) * sc);
  cv.height = Math.round((ey1 - ey0) * sc);
  view.setAttribute("data-scale", String(sc));  // canvas px per image px; (x0, y0): image point at the canvas origin
  view.setAttribute("data-x0", String(ex0));
  view.setAttribute("data-y0", String(ey0));
  view.setAttribute("data-map-grid", g.name);
  var ctx = cv.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#3a3a3a";
  ctx.fillRect(0, 0, cv.width, cv.height);
  ctx.setTransform(sc, 0, 0, sc, -ex0 * sc, -ey0 * sc);
  return { g: g, b: b, W: W, Hh: Hh, ex0: ex0, ey0: ey0, sc: sc, ctx: ctx, cv: cv,
           cw: (b[2] - b[0]) / g.cols, ch: (b[3] - b[1]) / g.rows };
}
function paintCells(f, m, top, opacity) {  // one jet-coloured cell per grid cell, alpha rising with the value
  var g = f.g, b = f.b, pad = 0.5 / f.sc;
  for (var r = 0; r < g.rows; r++) for (var c = 0; c < g.cols; c++) {
    var ci = r * g.cols + c, ti = g.token_index[ci];
    if (!m.onGrid && ti < 0) continue;
    var v = m.onGrid ? m.val(ci) : m.val(ti), t = top > 0 ? v / top : 0;
    f.ctx.fillStyle = rgb(jet(t), (opacity * (0.25 + 0.75 * t)).toFixed(3));
    f.ctx.fillRect(b[0] + c * f.cw, b[1] + r * f.ch, f.cw + pad, f.ch + pad);
  }
}
function outlineGrid(f) {  // image parts the grid does not cover (centre crop): dimmed; grid box outlined when it differs
  var ctx = f.ctx, b = f.b, W = f.W, Hh = f.Hh, sc = f.sc;
  ctx.fillStyle = "rgba(40,40,40,0.55)";
  var gx0 = Math.max(0, b[0]), gy0 = Math.max(0, b[1]), gx1 = Math.min(W, b[2]), gy1 = Math.min(Hh, b[3]);
  if (gy0 > 0) ctx.fillRect(0, 0, W, gy0);
  if (gy1 < Hh) ctx.fillRect(0, gy1, W, Hh - gy1);
  if (gx0 > 0) ctx.fillRect(0, gy0, gx0, gy1 - gy0);
  if (gx1 < W) ctx.fillRect(gx1, gy0, W - gx1, gy1 - gy0);
  ctx.lineWidth = 1.5 / sc;
  ctx.setLineDash([]);
  ctx.strokeStyle = "rgba(255,255,255,0.8)";
  ctx.strokeRect(0, 0, W, Hh);
  if (b[0] !== 0 || b[1] !== 0 || b[2] !== W || b[3] !== Hh) {
    ctx.setLineDash([4 / sc, 3 / sc]);
    ctx.strokeStyle = "#ffd400";
    ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
  }
}
function paintMarks(f, s) {  // masks, boxes and the peak the stages computed (never recomputed here); their legend
  var ctx = f.ctx, sc = f.sc, legend = [];
  [["gt_mask", "red fill: ground-truth mask"], ["pred_mask", "green fill: mask predicted from the selected heads"]].forEach(function (p) {
    if (!s[p[0]]) return;
    var o = overlayOf(st.sample, p[0]);
    if (o.complete && o.naturalWidth > 0) { ctx.drawImage(o, 0, 0, f.W, f.Hh); legend.push(p[1]); }
  });
  ctx.lineWidth = 2 / sc;
  function box(xywh, dash, colour, text) {
    ctx.setLineDash(dash);
    ctx.strokeStyle = colour;
    ctx.strokeRect(xywh[0], xywh[1], xywh[2], xywh[3]);
    legend.push(text);
  }
  if (s.gt_box) box(s.gt_box, [5 / sc, 3 / sc], "#ff2020", "red dashed: ground-truth box");
  if (s.pred_box) box(s.pred_box, [], "#00e000", s.box_source ? "green: " + s.box_source : "green: box predicted from the selected heads");
  if (s.peak && st.source === "combined") {
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(s.peak[0], s.peak[1], 3 / sc, 0, 2 * Math.PI);
    ctx.fill();
    legend.push("white dot: peak");
  }
  legend.push("yellow dotted: area the token grid covers (" + s.aspect + ")");
  return legend;
}
function drawColourBar(m, top) {
  var cb = $("cbar-canvas").getContext("2d");
  for (var x = 0; x < 160; x++) { cb.fillStyle = rgb(jet(x / 159)); cb.fillRect(x, 0, 1, 10); }
  $("cbar-lo").textContent = "0";
  $("cbar-hi").textContent = m.err ? "" : (m.fixed ? "1" : fmt(top, 4));
  $("cbar-label").textContent = m.err ? "" : "colour: " + m.cbar;
}
function hoverText(f, m, e) {  // the cell under the mouse and its value
  var cv = f.cv, g = f.g, b = f.b, rect = cv.getBoundingClientRect();
  var px = (e.clientX - rect.left) * cv.width / rect.width / f.sc + f.ex0, py = (e.clientY - rect.top) * cv.height / rect.height / f.sc + f.ey0;
  var c = Math.floor((px - b[0]) / f.cw), r = Math.floor((py - b[1]) / f.ch);
  if (r < 0 || r >= g.rows || c < 0 || c >= g.cols) return "outside the token grid";
  var ti = g.token_index[r * g.cols + c], val = m.onGrid ? m.val(r * g.cols + c) : (ti >= 0 ? m.val(ti) : NaN);
  return "cell (" + r + ", " + c + ") at x " + Math.round(px) + ", y " + Math.round(py) + ": " + fmt(val, 4) + " (8-bit approximation)";
}
function renderMapControls() {
  var s = S[st.sample];
  if (!s) return;
  var srcs = sources(s);
  if (srcs.filter(function (x) { return x[0] === st.source && !x[2]; }).length === 0) st.source = "head";
  tabs($("source-tabs"), srcs, st.source, function (k) { st.source = k; renderMapControls(); drawMap(); });
  var n = nRows(s);
  $("row-controls").hidden = n <= 1;
  if (n > 1) {
    var sl = $("row-slider"), row = st.row === null ? s.row : st.row;
    sl.max = String(n - 1);
    sl.value = String(row);
    $("row-label").textContent = s.query_mode === "generated" ? "generated token" : "query row";
    $("row-token").textContent = " " + row + ": " + JSON.stringify(s.row_labels[row]) + (s.tokens && s.tokens.share ? "  (image share " + fmt(s.tokens.share[row], 2) + ")" : "");
  }
  var gs = $("grid-select");
  $("grid-controls").hidden = s.grids.length <= 1;
  gs.innerHTML = "";
  s.grids.forEach(function (g) { gs.appendChild(el("option", { value: g.name, text: g.name + " " + g.rows + "x" + g.cols })); });
  gs.value = st.grid || s.grid;
  renderDetail();
}
function renderDetail() {
  var s = S[st.sample], box = $("sample-detail");
  box.innerHTML = "";
  if (!s) return;
  var rows = [["id", s.id], ["prompt", s.prompt], ["answer (generated)", s.answer], ["expected answer", s.gt_answer],
    ["ground-truth box (x, y, w, h)", s.gt_box ? boxText(s.gt_box) : null], ["predicted box", s.pred_box ? boxText(s.pred_box) : null],
    ["the map's own box", s.map_box ? boxText(s.map_box) : null],
    ["IoU", s.iou !== undefined ? fmt(s.iou, 3) : null], ["pointing (peak in box)", s.hit !== undefined ? String(s.hit) : null],
    ["image", (s.image_path || "") + " " + s.image_size.join("x") + (s.image_found ? "" : " (file not found: grey placeholder)")],
    ["layout", s.aspect + ", grid " + s.grid], ["group", s.group]];
  if (s.ablation) rows.push(["answer, selected heads masked", s.ablation.selected_heads + (s.ablation.selected_correct ? " (correct)" : " (wrong)")]);
  if (s.note) rows.push(["note", s.note]);
  var t = el("table", { id: "detail-table" });
  rows.forEach(function (r) { if (r[1] != null && r[1] !== "") t.appendChild(el("tr", null, [el("th", { text: r[0] }), el("td", { text: String(r[1]) })])); });
  box.appendChild(t);
}
