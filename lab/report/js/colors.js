/* Colour maps: jet (the PNG overlays'), viridis (the head grid's). */
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
