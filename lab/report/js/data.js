/* The run's data (lab/report/page_data.py PageData), parsed once: D the blob, S its samples. */
var D = JSON.parse(document.getElementById("lh-data").textContent);
var S = D.samples || [];
var SUM = D.summary || {};
var LAYERS = SUM.layers || [], HEADS = SUM.heads || [];
var L = LAYERS.length, H = HEADS.length;
S.forEach(function (s) { if (s.grids === undefined) s.grids = D.layouts[s.layout]; });
