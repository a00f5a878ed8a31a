/* The sample list: columns, short ids, sorting, filters, stepping (j / k). */
function boxText(b) { return b ? "(" + b.map(function (v) { return Math.round(v); }).join(", ") + ")" : ""; }
var LOW_IOU = 0.5;  // Acc@0.5's bar: a box below it counts as a miss
function isWrong(s) { return s.correct === false; }
function isLow(s) { return s.iou !== undefined && s.iou !== null && s.iou < LOW_IOU; }
var MATCH = D.answer_match || "exact";
var list = { sort: null, dir: 1, rows: [] };
// scroll the list (never the page: the page opens at its top) so that row `tr` is in view below the sticky header
function revealRow(tr) {
  var box = $("sample-list"), b = box.getBoundingClientRect(), r = tr.getBoundingClientRect();
  var head = box.querySelector("th"), top = b.top + (head ? head.getBoundingClientRect().height : 0);
  if (r.top < top) box.scrollTop -= top - r.top;
  else if (r.bottom > b.bottom) box.scrollTop += r.bottom - b.bottom;
}
// text widths in the list's fonts (canvas measureText: no layout needed)
var measure = document.createElement("canvas").getContext("2d");
function textWidth(text, weight, px) {
  measure.font = (weight || "400") + " " + (px || 12) + "px " + getComputedStyle(document.body).fontFamily;
  return measure.measureText(text).width;
}
var CELL_PAD = 8, ID_MAX = 84;  // px: a cell's padding and border; the widest id column
// What the id column shows (the full id is the cell's title): every id when all fit; else each without
// the prefix they all share, cut back to a separator or a digit run ("planted_00042" -> "…00042"); else
// from just before the first character where they differ, cut at the end to fit ("…001_ann_7").
function idLabels(ids) {
  var room = ID_MAX - CELL_PAD;
  function fits(t) { return textWidth(t) <= room; }
  if (ids.every(fits)) return ids.slice();
  var same = ids.length > 1 ? sharedPrefix(ids) : 0, cut = boundary(ids[0], same);
  var dropped = ids.map(function (x) { return cut ? "\u2026" + x.slice(cut) : x; });
  if (cut && dropped.every(fits)) return dropped;
  var from = Math.max(cut, same - 2);
  return ids.map(function (x) { return fitEnd(from ? "\u2026" + x.slice(from) : x, fits); });
}
function sharedPrefix(ids) {  // how many leading characters every id shares
  var n = ids[0].length;
  ids.forEach(function (x) { var i = 0; while (i < n && x[i] === ids[0][i]) i++; n = i; });
  return n;
}
function boundary(x, n) {  // the last cut at or before n after a separator or before a digit run (0: none)
  for (var i = n; i >= 3; i--) if (/[_\-\/.:\s]/.test(x[i - 1]) || (/\d/.test(x[i]) && !/\d/.test(x[i - 1]))) return i;
  return 0;
}
function fitEnd(t, fits) {
  if (fits(t)) return t;
  for (var k = t.length - 1; k > 1; k--) if (fits(t.slice(0, k) + "\u2026")) return t.slice(0, k) + "\u2026";
  return t.slice(0, 1) + "\u2026";
}
// a column's width: its given width, widened so that its label and the sort arrow (9px) fit
function columnWidth(c) {
  var need = Math.ceil(textWidth(c.label, "600") + (c.sort ? textWidth(" \u25bc", "600", 9) : 0)) + CELL_PAD;
  return c.w ? Math.max(c.w, need) : null;
}
var ID_LABELS = idLabels(S.map(function (s) { return String(s.id); }));
function idWidth() {
  var w = ID_LABELS.reduce(function (a, t) { return Math.max(a, textWidth(t)); }, 0);
  return Math.min(ID_MAX, Math.ceil(w) + CELL_PAD);
}
function sampleColumns() {
  var hasIoU = S.some(function (s) { return s.iou !== undefined; }), hasGt = S.some(function (s) { return s.gt_answer != null; });
  var hasOk = S.some(function (s) { return s.correct !== undefined; }), hasEnt = S.some(function (s) { return s.sel_entropy !== undefined; });
  return [
    { key: "id", label: "id", w: idWidth(), sort: function (s) { return s.id; },
      title: "sample id" + (ID_LABELS.some(function (t, i) { return t !== S[i].id; }) ? " (shortened where it would not fit; hover a row's id for all of it)" : "") },
    { key: "answer", label: "answer", w: 58, title: "the model's answer" },
    hasGt ? { key: "expected", label: "expected", w: 58, title: "the expected answer" } : null,
    hasOk ? { key: "correct", label: "ok", w: 24, sort: function (s) { return s.correct === undefined ? null : +s.correct; },
              title: "answer right (\u2713) or wrong (\u2717) against the expected answer (" + MATCH + " match, as stage=ablate)" } : null,
    hasIoU ? { key: "iou", label: "IoU", w: 44, sort: function (s) { return s.iou === undefined ? null : s.iou; },
               title: "IoU of the box from the selected heads with the ground-truth box (\u25be: below " + LOW_IOU + ")" } : null,
    hasEnt ? { key: "entropy", label: "entropy", w: 56, sort: function (s) { return s.sel_entropy === undefined ? null : s.sel_entropy; },
               title: "mean spatial entropy of the selected heads in this sample (lower = more focused)" } : null,
    { key: "prompt", label: "prompt", title: "the query (hover a row for all of it)" }].filter(Boolean);
}
function sampleCell(c, s, i) {
  if (c.key === "id") return el("td", { cls: "sid", title: s.id, text: ID_LABELS[i] });
  if (c.key === "answer") return el("td", { cls: isWrong(s) ? "flag" : "", text: s.answer == null ? "" : String(s.answer) });
  if (c.key === "expected") return el("td", { text: s.gt_answer == null ? "" : String(s.gt_answer) });
  if (c.key === "correct") return el("td", { cls: "mark" + (isWrong(s) ? " flag" : ""), "data-correct": s.correct === undefined ? "" : String(s.correct),
                                              text: s.correct === undefined ? "" : (s.correct ? "\u2713" : "\u2717") });
  if (c.key === "iou") return el("td", { cls: "num" + (isLow(s) ? " flag" : ""), "data-iou": s.iou === undefined ? "" : String(s.iou),
                                         text: s.iou === undefined ? "" : fmt(s.iou, 2) + (isLow(s) ? "\u25be" : "") });
  if (c.key === "entropy") return el("td", { cls: "num", text: s.sel_entropy === undefined ? "" : fmt(s.sel_entropy, 2) });
  return el("td", { cls: "prompt", title: s.prompt == null ? "" : String(s.prompt), text: s.prompt == null ? "" : String(s.prompt) });
}
function sortRows(t, cols) {
  var c = cols.filter(function (x) { return x.key === list.sort; })[0];
  var order = S.map(function (_, i) { return i; });
  if (c) order.sort(function (a, b) {
    var va = c.sort(S[a]), vb = c.sort(S[b]);
    if (va === null || vb === null) return (va === null) - (vb === null) || a - b;  // no value: last either way
    var d = typeof va === "string" ? va.localeCompare(vb, undefined, { numeric: true }) : va - vb;
    return d * list.dir || a - b;
  });
  order.forEach(function (i) { t.appendChild(list.rows[i]); });
  t.querySelectorAll("th[data-sort]").forEach(function (th) {
    var on = th.getAttribute("data-sort") === list.sort;
    th.setAttribute("aria-sort", on ? (list.dir > 0 ? "ascending" : "descending") : "none");
    th.querySelector(".arrow").textContent = on ? (list.dir > 0 ? " \u25b2" : " \u25bc") : "";
  });
}
function visibleSamples() {
  return list.rows.filter(function (tr) { return tr.parentNode && !tr.hidden; }).map(function (tr) { return +tr.getAttribute("data-sample"); })
    .sort(function (a, b) { return list.rows[a].rowIndex - list.rows[b].rowIndex; });
}
function applyFilter() {
  var q = $("sample-filter").value.toLowerCase(), wrong = $("filter-wrong").checked, low = $("filter-low").checked;
  var shown = 0, right = 0, judged = 0;
  S.forEach(function (s, i) {
    var hide = (q && (s.id + " " + s.prompt + " " + s.answer + " " + (s.gt_answer || "")).toLowerCase().indexOf(q) < 0) ||
      (wrong && !isWrong(s)) || (low && !isLow(s));
    list.rows[i].hidden = !!hide;
    if (!hide) { shown++; if (s.correct !== undefined) { judged++; right += s.correct ? 1 : 0; } }
  });
  $("sample-count").textContent = shown === S.length ? "(" + S.length + ")" : "(" + shown + " / " + S.length + ")";
  renderListStats(shown < S.length ? [right, judged] : null);
  if (st.sample >= 0 && list.rows[st.sample] && list.rows[st.sample].hidden || st.sample < 0) {
    var vis = visibleSamples();
    if (vis.length) pickSample(vis[0]); else clearSample();
  }
}
function renderListStats(filtered) {
  var ok = S.filter(function (s) { return s.correct !== undefined; }), right = ok.filter(function (s) { return s.correct; }).length;
  var withIoU = S.filter(function (s) { return s.iou !== undefined; }), low = withIoU.filter(isLow).length;
  var parts = [];
  if (ok.length) parts.push("right answers: " + right + " of " + ok.length + " (" + fmt(100 * right / ok.length, 0) + "%, " + MATCH + " match)" +
    (filtered ? "; shown: " + filtered[0] + " of " + filtered[1] : ""));
  if (withIoU.length) parts.push("IoU < " + LOW_IOU + ": " + low + " of " + withIoU.length);
  $("sample-stats").textContent = parts.join(" \u00b7 ");
  $("filter-wrong").disabled = !ok.length;
  $("filter-low").disabled = !withIoU.length;
}
function renderSampleList() {
  var cols = sampleColumns();
  var t = el("table", { id: "samples-table" }), cg = el("colgroup"), hr = el("tr");
  cols.forEach(function (c) {
    var w = columnWidth(c);
    cg.appendChild(el("col", w ? { style: "width:" + w + "px" } : null));
    var th = el("th", { title: c.title });
    if (c.sort) {
      th.setAttribute("data-sort", c.key);
      th.setAttribute("aria-sort", "none");
      var b = el("button", { type: "button", cls: "sort", text: c.label }, [el("span", { cls: "arrow" })]);
      b.addEventListener("click", function () {
        list.dir = list.sort === c.key ? -list.dir : 1;
        list.sort = c.key;
        sortRows(t, cols);
        var tr = list.rows[st.sample];
        if (tr && !tr.hidden) revealRow(tr);
      });
      th.appendChild(b);
    } else th.textContent = c.label;
    hr.appendChild(th);
  });
  t.appendChild(cg);
  t.appendChild(hr);
  list.rows = S.map(function (s, i) {
    var tr = el("tr", { "data-sample": String(i), title: s.prompt + "\n-> " + s.answer + (isWrong(s) ? " (wrong)" : "") },
      cols.map(function (c) { return sampleCell(c, s, i); }));
    if (isWrong(s)) tr.classList.add("wrong");
    if (isLow(s)) tr.classList.add("low-iou");
    tr.addEventListener("click", function () { pickSample(i); });
    t.appendChild(tr);
    return tr;
  });
  $("sample-list").appendChild(t);
  $("sample-count").textContent = "(" + S.length + ")";
  renderListStats(null);
  ["sample-filter", "filter-wrong", "filter-low"].forEach(function (id) { $(id).addEventListener(id === "sample-filter" ? "input" : "change", applyFilter); });
  function step(d) {
    var vis = visibleSamples();
    if (!vis.length) return;
    var at = vis.indexOf(st.sample);
    pickSample(vis[Math.max(0, Math.min(vis.length - 1, at < 0 ? 0 : at + d))]);
  }
  $("prev-sample").addEventListener("click", function () { step(-1); });
  $("next-sample").addEventListener("click", function () { step(1); });
  document.addEventListener("keydown", function (e) {
    if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) return;
    if (e.key === "j") step(1); else if (e.key === "k") step(-1);
  });
}
