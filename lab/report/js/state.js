/* What the page shows now: the sample, the head, the grid statistic, the map source. */
var selected = ((D.heads || {}).selected || []).map(function (d) { return [d.layer, d.head]; });
var st = { sample: 0, layer: selected.length ? selected[0][0] : LAYERS[0], head: selected.length ? selected[0][1] : HEADS[0],
           stat: "s_img", scope: "mean", source: "head", row: null, grid: null };
function axisL(l) { return LAYERS.indexOf(l); }
function axisH(h) { return HEADS.indexOf(h); }
function isSelected(l, h) { return selected.some(function (p) { return p[0] === l && p[1] === h; }); }
