/* DOM and text helpers: $, el, fmt, headName. */
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
function headerRow(labels) { return el("tr", null, labels.map(function (h) { return el("th", { text: h }); })); }
function headName(l, h) { return "L" + l + "H" + h; }
