/* Picking a sample or a head, keyboard moves on the grid, the map controls' events. */
function clearSample() {
  st.sample = -1;
  document.querySelectorAll("#sample-list tr.current").forEach(function (tr) { tr.classList.remove("current"); });
  renderDetail();
  if (st.scope === "sample") renderGrid();
  drawMap();
}
function pickSample(i) {
  st.sample = i;
  st.row = null;
  st.grid = null;
  document.querySelectorAll("#sample-list tr.current").forEach(function (tr) { tr.classList.remove("current"); });
  var tr = document.querySelector('#sample-list tr[data-sample="' + i + '"]');
  if (tr) { tr.classList.add("current"); revealRow(tr); }
  renderMapControls();
  if (st.scope === "sample") renderGrid();
  drawMap();
}
function pickHead(l, h) {
  st.layer = l;
  st.head = h;
  st.source = "head";
  renderGrid();
  renderMapControls();
  drawMap();
}
function focusCell(li, hi) {  // roving tabindex: one cell of the grid is in the Tab order
  li = Math.max(0, Math.min(L - 1, li));
  hi = Math.max(0, Math.min(H - 1, hi));
  var td = document.querySelector('#head-grid td[data-layer="' + LAYERS[li] + '"][data-head="' + HEADS[hi] + '"]');
  if (!td) return;
  document.querySelectorAll('#head-grid td[tabindex="0"]').forEach(function (x) { x.setAttribute("tabindex", "-1"); });
  td.setAttribute("tabindex", "0");
  td.focus();
}
$("head-grid").addEventListener("keydown", function (e) {
  var td = e.target;
  if (!td || td.tagName !== "TD" || !td.hasAttribute("data-layer")) return;
  var li = axisL(+td.getAttribute("data-layer")), hi = axisH(+td.getAttribute("data-head"));
  var mv = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -H], End: [0, H] }[e.key];
  if (mv) { e.preventDefault(); focusCell(li + mv[0], hi + mv[1]); }
  else if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pickHead(LAYERS[li], HEADS[hi]); focusCell(li, hi); }
});
$("row-slider").addEventListener("input", function () { st.row = +this.value; renderMapControls(); drawMap(); });
$("grid-select").addEventListener("change", function () { st.grid = this.value; drawMap(); });
$("opacity-slider").addEventListener("input", function () { $("opacity-value").textContent = this.value + "%"; drawMap(); });
$("image-only").addEventListener("change", drawMap);
