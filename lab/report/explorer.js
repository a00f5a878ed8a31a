/* Localization-heads run explorer: draws everything from the JSON blob #lh-data; loads nothing. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("lh-data").textContent);
  var S = D.samples || [];
  var SUM = D.summary || {};
  var LAYERS = SUM.layers || [], HEADS = SUM.heads || [];
  var L = LAYERS.length, H = HEADS.length;
  S.forEach(function (s) { if (s.grids === undefined) s.grids = D.layouts[s.layout]; });

  // ---- small helpers ---------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function fmt(v, d) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "n/a";
    return typeof v === "number" ? v.toFixed(d === undefined ? 3 : d) : String(v);
  }
  function headName(l, h) { return "L" + l + "H" + h; }
  function bytes(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function f32(b64) { var u = bytes(b64); return new Float32Array(u.buffer, 0, u.length / 4); }
  function half(h) {
    var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * Math.pow(2, e - 15) * (1 + f / 1024);
  }
  function f16(t) {  // a float16 table, or a float32 one ({f32: ...})
    if (!t) return null;
    if (t.f32) return Float64Array.from(f32(t.f32));
    var u = bytes(t.f16), out = new Float64Array(u.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = half(u[2 * i] | (u[2 * i + 1] << 8));
    return out;
  }
  var cache = {};
  function memo(key, fn) { if (!(key in cache)) cache[key] = fn(); return cache[key]; }
  function deq(enc) {  // 8-bit maps: value = q / 255 * scale[map]
    return { q: bytes(enc.q), scale: f32(enc.scale), shape: enc.shape, V: enc.shape[enc.shape.length - 1] };
  }
  function jet(t) {  // the colormap of the PNG overlays
    t = Math.max(0, Math.min(1, t));
    function c(x) { return Math.round(255 * Math.max(0, Math.min(1, 1.5 - Math.abs(4 * t - x)))); }
    return [c(3), c(2), c(1)];
  }
  function viridis(t) {
    var P = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
    t = Math.max(0, Math.min(1, isFinite(t) ? t : 0)) * (P.length - 1);
    var i = Math.min(P.length - 2, Math.floor(t)), f = t - i;
    return P[i].map(function (a, k) { return Math.round(a + f * (P[i + 1][k] - a)); });
  }
  function rgb(c, a) { return a === undefined ? "rgb(" + c.join(",") + ")" : "rgba(" + c.join(",") + "," + a + ")"; }

  // ---- state -----------------------------------------------------------------------------
  var selected = ((D.heads || {}).selected || []).map(function (d) { return [d.layer, d.head]; });
  var st = { sample: 0, layer: selected.length ? selected[0][0] : LAYERS[0], head: selected.length ? selected[0][1] : HEADS[0],
             stat: "s_img", scope: "mean", source: "head", row: null, grid: null };
  function axisL(l) { return LAYERS.indexOf(l); }
  function axisH(h) { return HEADS.indexOf(h); }
  function isSelected(l, h) { return selected.some(function (p) { return p[0] === l && p[1] === h; }); }

  // ---- run summary, settings, failures -----------------------------------------------------
  function renderSummary() {
    var rows = [["model", SUM.model_id], ["model type", SUM.model_type],
      ["layers x heads", SUM.num_layers !== undefined ? SUM.num_layers + " x " + SUM.num_heads + (L !== SUM.num_layers || H !== SUM.num_heads ? " (captured " + L + " x " + H + ")" : "") : null],
      ["image grid", SUM.grid ? SUM.grid + " (" + SUM.aspect + ")" : null], ["query rows", SUM.query_mode],
      ["samples", SUM.records !== undefined ? SUM.records + " records" + (SUM.listed !== SUM.records ? ", " + SUM.listed + " listed" : "") : null],
      ["failed rows", String((D.failures || []).length)]];
    var t = el("table", { id: "summary-table" });
    rows.forEach(function (r) { if (r[1] != null) t.appendChild(el("tr", null, [el("th", { text: r[0] }), el("td", { text: String(r[1]) })])); });
    $("summary").appendChild(t);
    $("subtitle").textContent = [SUM.model_id, SUM.records !== undefined ? SUM.records + " samples" : null,
      selected.length ? "localization heads " + selected.map(function (p) { return headName(p[0], p[1]); }).join(", ") : null]
      .filter(Boolean).join("  \u00b7  ");
    (D.notes || []).forEach(function (n) { $("notes").appendChild(el("p", { cls: "note", text: n })); });
    var F = D.failures || [];
    if (F.length) {
      var ft = el("table", { id: "failures-table" }, [el("tr", null, [el("th", { text: "failed id" }), el("th", { text: "line" }), el("th", { text: "reason" })])]);
      F.forEach(function (f) { ft.appendChild(el("tr", null, [el("td", { text: f.id }), el("td", { text: f.line == null ? "" : String(f.line) }), el("td", { text: f.reason })])); });
      $("failures").appendChild(el("h3", { text: "Failures (" + F.length + ")" }));
      $("failures").appendChild(ft);
    }
    var C = D.configs || {};
    Object.keys(C).forEach(function (k) {
      $("settings").appendChild(el("details", null, [el("summary", { text: "settings: " + k + " (composed config)" }), el("pre", { text: JSON.stringify(C[k], null, 2) })]));
    });
    if (D.files && D.files.length) {
      $("files-section").hidden = false;
      var det = el("details", D.files.length <= 24 ? { open: "" } : null, [el("summary", { text: D.files.length + (D.files.length === 1 ? " file" : " files") + " in the run folder (links open them; nothing is loaded before)" })]);
      D.files.forEach(function (f) {
        det.appendChild(el("a", { href: f.split("/").map(encodeURIComponent).join("/"), text: f }));
        det.appendChild(document.createTextNode("  "));
      });
      $("files").appendChild(det);
    }
  }

  // ---- selected heads + elbow --------------------------------------------------------------
  function renderHeads() {
    var HD = D.heads || {}, sel = HD.selected || [];
    var t = el("table", { id: "selected-heads" }, [el("tr", null, ["rank", "head", "frequency", "mean S_img", "mean entropy"].map(function (h) { return el("th", { text: h }); }))]);
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

  // ---- evaluate / ablate tables --------------------------------------------------------------
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
    var t = el("table", { id: "metrics-table" }, [el("tr", null, ["head set", "Acc@0.5", "mIoU", "pointing", "n"].map(function (h) { return el("th", { text: h }); }))]);
    [["selected_heads", "selected heads (" + (M.heads || []).map(function (p) { return headName(p[0], p[1]); }).join(", ") + ")"],
     ["all_heads_mean", "mean of all heads"], ["random_heads", k + " random heads (" + (rnd.draws || 0) + " draws, mean \u00b1 std)"]].forEach(function (r) {
      var d = M[r[0]] || {}, isR = r[0] === "random_heads";
      t.appendChild(el("tr", { "data-row": r[0] }, [el("td", { text: r[1] }), metricCell(r[0] + ".acc@0.5", d["acc@0.5"], isR ? d["acc@0.5_std"] : undefined),
        metricCell(r[0] + ".miou", d.miou, isR ? d.miou_std : undefined), metricCell(r[0] + ".pointing", d.pointing, isR ? d.pointing_std : undefined),
        el("td", { cls: "num", "data-metric": r[0] + ".n", text: String(d.n) })]));
    });
    $("metrics").appendChild(t);
    if ((M.selected_heads || {}).mask) {  // grounding.output=mask|both: mask metrics (lab/masks.py)
      var mk = ["miou", "ciou", "p@0.5", "p@0.7", "p@0.9"], mt = el("table", { id: "mask-metrics-table" }, [el("tr", null, ["masks", "mIoU", "cIoU", "P@0.5", "P@0.7", "P@0.9"].map(function (h) { return el("th", { text: h }); }))]);
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
    var t = el("table", { id: "ablation-table" }, [el("tr", null, ["condition", "answer accuracy", "answers changed vs baseline", "n"].map(function (h) { return el("th", { text: h }); }))]);
    var rch = (r.draws || []).map(function (d) { return d.changed_vs_baseline; });
    var rchMean = rch.length ? rch.reduce(function (a, c) { return a + c; }, 0) / rch.length : null;
    [["baseline", "no intervention", b.accuracy, null, b.n, null],
     ["selected_heads", "selected heads masked (" + (s.heads || []).map(function (p) { return headName(p[0], p[1]); }).join(", ") + ")", s.accuracy, s.changed_vs_baseline, s.n, null],
     ["random_heads", (s.heads || []).length + " random heads masked (" + (r.draws || []).length + " draws, mean \u00b1 std; min " + fmt(r.min) + ", max " + fmt(r.max) + ")", r.mean, rchMean, r.n, r.std]].forEach(function (row) {
      var acc = el("td", { cls: "num" }, [el("span", { "data-metric": "ablation." + row[0] + ".accuracy", text: fmt(row[2]) })]);
      if (row[5] != null) acc.appendChild(el("span", { cls: "std", "data-metric": "ablation." + row[0] + ".std", text: " \u00b1 " + fmt(row[5]) }));
      t.appendChild(el("tr", null, [el("td", { text: row[1] }), acc, el("td", { cls: "num", text: row[3] == null ? "-" : fmt(row[3]) }), el("td", { cls: "num", text: String(row[4]) })]));
    });
    $("ablation").appendChild(t);
    var se = A.settings || {};
    $("ablation").appendChild(el("p", { cls: "hint", text: "match " + se.match + ", mask " + se.maskout_mode + ", steps " + se.steps + ", max_new_tokens " + se.max_new_tokens + ", seed " + se.seed + (r.note ? "; " + r.note : "") }));
  }

  // ---- sample list ---------------------------------------------------------------------------
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

  // ---- layer x head grid ---------------------------------------------------------------------
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
    lg.appendChild(el("div", { cls: "hint" }, [el("span", { id: "grid-cbar-lo", text: isFinite(lo) ? ends[0] : "" }), cv, el("span", { id: "grid-cbar-hi", text: isFinite(hi) ? ends[1] : "" })]));
    lg.appendChild(el("div", { cls: "hint", id: "grid-cbar-label", text: "colour: " + STATS[st.stat] + ", " + gv.label + ". Red border: selected heads; hatched: excluded layers; grey: no finite value. Keyboard: Tab to the grid, arrow keys move, Enter or Space shows that head." }));
  }

  // ---- the map view ----------------------------------------------------------------------------
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
    if (!s) {
      view.setAttribute("data-state", "empty");
      var c0 = cv.getContext("2d");
      c0.setTransform(1, 0, 0, 1, 0, 0);
      c0.clearRect(0, 0, cv.width, cv.height);
      $("map-title").textContent = "Map: no sample shown";
      $("map-legend").textContent = S.length ? "the filter hides every sample" : "no sample in this report";
      $("map-hover").textContent = "";
      return;
    }
    var row = st.row === null ? s.row : st.row;
    view.setAttribute("data-map-row", String(row));
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
    var im = imageOf(st.sample);
    var ready = im.complete && im.naturalWidth > 0;
    if (ready) ctx.drawImage(im, 0, 0, W, Hh);
    var m = currentMap(s);
    $("map-title").textContent = "Map: sample " + s.id + (m.title ? " \u2014 " + m.title : "");
    var cols = g.cols, rows = g.rows, cw = (b[2] - b[0]) / cols, ch = (b[3] - b[1]) / rows, pad = 0.5 / sc;
    var top = m.err ? 0 : (m.fixed ? 1 : m.max), opacity = +$("opacity-slider").value / 100, only = $("image-only").checked;
    view.setAttribute("data-image-only", String(only));
    view.setAttribute("data-opacity", String(opacity));
    if (only) {
      view.setAttribute("data-state", ready ? "ready" : "loading");
      $("map-legend").textContent = "image only: the map, boxes and masks are hidden (untick \u201cimage only\u201d to see them)";
      return;
    }
    if (!m.err) {
      for (var r = 0; r < rows; r++) for (var c = 0; c < cols; c++) {
        var ci = r * cols + c, ti = g.token_index[ci];
        if (!m.onGrid && ti < 0) continue;
        var v = m.onGrid ? m.val(ci) : m.val(ti), t = top > 0 ? v / top : 0;
        ctx.fillStyle = rgb(jet(t), (opacity * (0.25 + 0.75 * t)).toFixed(3));
        ctx.fillRect(b[0] + c * cw, b[1] + r * ch, cw + pad, ch + pad);
      }
    }
    // image parts the grid does not cover (centre crop): dimmed; grid box outlined when it differs
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
    var legend = [];
    [["gt_mask", "red fill: ground-truth mask"], ["pred_mask", "green fill: mask predicted from the selected heads"]].forEach(function (p) {
      if (!s[p[0]]) return;
      var o = overlayOf(st.sample, p[0]);
      if (o.complete && o.naturalWidth > 0) { ctx.drawImage(o, 0, 0, W, Hh); legend.push(p[1]); }
    });
    ctx.lineWidth = 2 / sc;
    if (s.gt_box) { ctx.setLineDash([5 / sc, 3 / sc]); ctx.strokeStyle = "#ff2020"; ctx.strokeRect(s.gt_box[0], s.gt_box[1], s.gt_box[2], s.gt_box[3]); legend.push("red dashed: ground-truth box"); }
    if (s.pred_box) { ctx.setLineDash([]); ctx.strokeStyle = "#00e000"; ctx.strokeRect(s.pred_box[0], s.pred_box[1], s.pred_box[2], s.pred_box[3]); legend.push("green: box predicted from the selected heads"); }
    if (s.peak && st.source === "combined") { ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(s.peak[0], s.peak[1], 3 / sc, 0, 2 * Math.PI); ctx.fill(); legend.push("white dot: peak"); }
    legend.push("yellow dotted: area the token grid covers (" + s.aspect + ")");
    $("map-legend").textContent = m.err ? m.err : legend.join("; ");
    // colour bar
    var cb = $("cbar-canvas").getContext("2d");
    for (var x = 0; x < 160; x++) { cb.fillStyle = rgb(jet(x / 159)); cb.fillRect(x, 0, 1, 10); }
    $("cbar-lo").textContent = "0";
    $("cbar-hi").textContent = m.err ? "" : (m.fixed ? "1" : fmt(top, 4));
    $("cbar-label").textContent = m.err ? "" : "colour: " + m.cbar;
    cv.onmousemove = function (e) {
      if (m.err) return;
      var rect = cv.getBoundingClientRect(), px = (e.clientX - rect.left) * cv.width / rect.width / sc + ex0, py = (e.clientY - rect.top) * cv.height / rect.height / sc + ey0;
      var c2 = Math.floor((px - b[0]) / cw), r2 = Math.floor((py - b[1]) / ch);
      if (r2 < 0 || r2 >= rows || c2 < 0 || c2 >= cols) { $("map-hover").textContent = "outside the token grid"; return; }
      var ti2 = g.token_index[r2 * cols + c2];
      var val = m.onGrid ? m.val(r2 * cols + c2) : (ti2 >= 0 ? m.val(ti2) : NaN);
      $("map-hover").textContent = "cell (" + r2 + ", " + c2 + ") at x " + Math.round(px) + ", y " + Math.round(py) + ": " + fmt(val, 4) + " (8-bit approximation)";
    };
    view.setAttribute("data-state", ready ? "ready" : "loading");
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
      ["IoU", s.iou !== undefined ? fmt(s.iou, 3) : null], ["pointing (peak in box)", s.hit !== undefined ? String(s.hit) : null],
      ["image", (s.image_path || "") + " " + s.image_size.join("x") + (s.image_found ? "" : " (file not found: grey placeholder)")],
      ["layout", s.aspect + ", grid " + s.grid], ["group", s.group]];
    if (s.ablation) rows.push(["answer, selected heads masked", s.ablation.selected_heads + (s.ablation.selected_correct ? " (correct)" : " (wrong)")]);
    if (s.note) rows.push(["note", s.note]);
    var t = el("table", { id: "detail-table" });
    rows.forEach(function (r) { if (r[1] != null && r[1] !== "") t.appendChild(el("tr", null, [el("th", { text: r[0] }), el("td", { text: String(r[1]) })])); });
    box.appendChild(t);
  }

  // ---- interactions ------------------------------------------------------------------------------
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

  renderSummary();
  renderHeads();
  renderMetrics();
  renderAblation();
  renderSampleList();
  renderGrid();
  if (S.length) pickSample(0); else { $("map-legend").textContent = "no sample in this report"; }
})();
