/* Panel: the run summary, notes, failures, settings and files. */
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
    var what = D.files.length + (D.files.length === 1 ? " file" : " files") + " in the run folder (links open them; nothing is loaded before)";
    var det = el("details", D.files.length <= 24 ? { open: "" } : null, [el("summary", { text: what })]);
    D.files.forEach(function (f) {
      det.appendChild(el("a", { href: f.split("/").map(encodeURIComponent).join("/"), text: f }));
      det.appendChild(document.createTextNode("  "));
    });
    $("files").appendChild(det);
  }
}
