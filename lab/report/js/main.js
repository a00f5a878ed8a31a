/* Start: draw every panel (PANELS, in page order), then the first sample. */
var PANELS = [renderSummary, renderHeads, renderVisualHeads, renderMetrics, renderAblation, renderSampleList, renderGrid];
PANELS.forEach(function (render) { render(); });
if (S.length) pickSample(0); else { $("map-legend").textContent = "no sample in this report"; }
