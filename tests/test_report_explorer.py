"""The explorer's sample list, map controls and head grid in Chromium (issue 24, item 13): one page
built once for the module (the toy run of 16 samples, three answers made wrong), a fresh tab per test.
Skips (tests/conftest.py `browser`) when Chromium or Playwright is missing (fails under CI=true)."""

from __future__ import annotations

import json

import pytest
from browser_page import Page

from lab.records.record import AttentionRecord
from lab.report import explorer_html

WRONG = {"toy_0002": "banana", "toy_0005": "no idea", "toy_0011": "a hexagon"}


@pytest.fixture(scope="module")
def page_file(toy_run, tmp_path_factory):
    """The toy run's page with three answers replaced (the toy model answers every row right)."""
    recs = [AttentionRecord.load(p) for p in sorted((toy_run / "attention").glob("*.safetensors"))]
    for r in recs:
        if r.meta.sample_id in WRONG:
            r.meta.generated_text = WRONG[r.meta.sample_id]
    out = tmp_path_factory.mktemp("explorer") / "index.html"
    out.write_text(explorer_html(toy_run, records=recs), encoding="utf-8")
    data = json.loads(out.read_text(encoding="utf-8").split('id="lh-data">', 1)[1].split("</script>", 1)[0])
    return out, data["samples"]


@pytest.fixture
def tab(browser, page_file):  # noqa: F811
    p = Page(browser, page_file[0].as_uri())
    p.ready()
    yield p
    assert p.errors == [] and p.warnings == []
    p.close()


def _shown_rows(pg) -> list[int]:
    return pg.eval_on_selector_all("#samples-table tr[data-sample]", "rs => rs.filter(r => !r.hidden).map(r => +r.dataset.sample)")


def test_the_list_fits_its_pane_and_prompts_truncate_with_the_full_text_on_hover(tab):
    pg = tab.page
    fit = pg.evaluate("""() => { const l = document.getElementById('sample-list'), t = document.getElementById('samples-table');
        const cells = [...t.querySelectorAll('td.prompt')];
        return {table: t.scrollWidth, list: l.clientWidth, pane: document.getElementById('samples-pane').clientWidth,
                overflow: getComputedStyle(l).overflowY, ellipsis: getComputedStyle(cells[0]).textOverflow,
                cut: cells.filter(c => c.scrollWidth > c.clientWidth).length, n: cells.length,
                titles: cells.map(c => c.title), texts: cells.map(c => c.textContent)}; }""")
    assert fit["table"] <= fit["list"] <= fit["pane"], fit  # nothing sticks out of the pane
    assert fit["overflow"] == "auto" and fit["ellipsis"] == "ellipsis"
    assert fit["n"] == 16 and fit["cut"] >= 1  # "what shape is the ..." does not fit: cut with an ellipsis
    assert fit["titles"] == fit["texts"] and all(t.startswith("what") for t in fit["titles"])


def test_headers_sort_both_ways_with_aria_sort(tab, page_file):
    pg, S = tab.page, page_file[1]
    sortable = pg.eval_on_selector_all("#samples-table th[data-sort]", "ths => ths.map(t => t.dataset.sort)")
    assert sortable == ["id", "correct", "iou", "entropy"]
    plain = pg.eval_on_selector_all("#samples-table th:not([data-sort])", "ths => ths.map(t => [t.textContent, t.querySelector('button')])")
    assert [t for t, _ in plain] == ["answer", "expected", "prompt"] and all(b is None for _, b in plain)

    def order(key):
        return {"iou": lambda i: S[i]["iou"], "entropy": lambda i: S[i]["sel_entropy"],
                "correct": lambda i: int(S[i]["correct"]), "id": lambda i: S[i]["id"]}[key]

    for key in ("iou", "entropy", "correct", "id"):
        pg.click(f'#samples-table th[data-sort="{key}"] button')
        up = _shown_rows(pg)
        assert [order(key)(i) for i in up] == sorted(order(key)(i) for i in up), key
        assert pg.get_attribute(f'th[data-sort="{key}"]', "aria-sort") == "ascending"
        assert pg.eval_on_selector_all('th[aria-sort="none"]', "x => x.length") == 3
        pg.click(f'#samples-table th[data-sort="{key}"] button')
        down = _shown_rows(pg)
        assert [order(key)(i) for i in down] == sorted((order(key)(i) for i in down), reverse=True), key
        assert pg.get_attribute(f'th[data-sort="{key}"]', "aria-sort") == "descending"
    assert _shown_rows(pg) == list(range(15, -1, -1))  # id descending
    pg.click('#samples-table th[data-sort="iou"] button')
    rows = _shown_rows(pg)
    pg.click("#next-sample")  # the arrows (and j / k) follow the shown order
    tab.ready()
    assert tab.view()["attrs"]["mapSample"] == str(rows[rows.index(0) + 1])


def test_count_while_filtering_and_no_filtered_out_sample_on_the_map(tab):
    pg = tab.page
    assert pg.inner_text("#sample-count") == "(16)"
    pg.fill("#sample-filter", "toy_000")
    assert pg.inner_text("#sample-count") == "(10 / 16)" and tab.view()["attrs"]["mapSample"] == "0"
    pg.fill("#sample-filter", "toy_0013")  # the current sample is filtered out: the first shown is drawn
    tab.ready()
    assert pg.inner_text("#sample-count") == "(1 / 16)" and tab.view()["attrs"]["mapSample"] == "13"
    assert "toy_0013" in pg.inner_text("#sample-detail") and "toy_0013" in pg.inner_text("#map-title")
    pg.fill("#sample-filter", "no such sample")  # nothing shown: the map is cleared
    assert pg.inner_text("#sample-count") == "(0 / 16)"
    v = tab.view()
    assert v["attrs"]["state"] == "empty" and pg.inner_text("#map-title") == "Map: no sample shown"
    assert pg.inner_text("#sample-detail") == "" and "filter hides every sample" in pg.inner_text("#map-legend")
    blank = pg.evaluate("() => { const c = document.getElementById('map-canvas');"
                        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).every(x => x === 0); }")
    assert blank
    pg.fill("#sample-filter", "")
    tab.ready()
    assert pg.inner_text("#sample-count") == "(16)" and tab.view()["attrs"]["mapSample"] == "0"


def test_wrong_answers_and_low_iou_are_flagged_counted_and_filterable(tab, page_file):
    pg, S = tab.page, page_file[1]
    wrong = [i for i, s in enumerate(S) if s["id"] in WRONG]
    low = [i for i, s in enumerate(S) if s["iou"] < 0.5]
    assert [S[i]["correct"] for i in wrong] == [False] * 3 and sum(s["correct"] for s in S) == 13
    assert 0 < len(low) < 16
    stats = pg.inner_text("#sample-stats")
    assert "right answers: 13 of 16 (81%, exact match)" in stats and f"IoU < 0.5: {len(low)} of 16" in stats
    marks = dict(pg.eval_on_selector_all("#samples-table tr[data-sample]",
                                         "rs => rs.map(r => [+r.dataset.sample, r.querySelector('td.mark').textContent])"))
    assert {i for i, m in marks.items() if m == "\u2717"} == set(wrong) and set(marks.values()) == {"\u2713", "\u2717"}
    flagged = pg.eval_on_selector_all("#samples-table td[data-iou].flag", "ts => ts.map(t => [+t.parentNode.dataset.sample, t.textContent])")
    assert sorted(i for i, _ in flagged) == low and all(t.endswith("\u25be") for _, t in flagged)
    pg.check("#filter-wrong")
    assert sorted(_shown_rows(pg)) == wrong and pg.inner_text("#sample-count") == "(3 / 16)"
    assert tab.view()["attrs"]["mapSample"] == str(wrong[0])  # sample 0 was filtered out
    assert "shown: 0 of 3" in pg.inner_text("#sample-stats")
    pg.uncheck("#filter-wrong")
    pg.check("#filter-low")
    assert sorted(_shown_rows(pg)) == low and pg.inner_text("#sample-count") == f"({len(low)} / 16)"
    pg.check("#filter-wrong")  # both: wrong and low IoU
    assert sorted(_shown_rows(pg)) == sorted(set(low) & set(wrong))


def test_opacity_slider_and_image_only_view(tab):
    pg = tab.page

    def pixels():
        tab.ready()
        return tab.view()["pixels"]

    def set_opacity(v):
        pg.eval_on_selector("#opacity-slider", f"s => {{ s.value = {v}; s.dispatchEvent(new Event('input')); }}")

    at70 = pixels()
    set_opacity(20)
    at20 = pixels()
    assert at20 != at70 and pg.inner_text("#opacity-value") == "20%" and tab.view()["attrs"]["opacity"] == "0.2"
    set_opacity(0)
    at0 = pixels()
    assert at0 not in (at20, at70)
    pg.check("#image-only")
    only = pixels()
    assert tab.view()["attrs"]["imageOnly"] == "true" and only not in (at0, at20, at70)  # no boxes either
    assert "image only" in pg.inner_text("#map-legend")
    set_opacity(90)
    pg.click('#head-grid td[data-layer="3"][data-head="1"]')
    assert pixels() == only  # neither the head nor the opacity changes the bare image
    pg.uncheck("#image-only")
    assert pixels() not in (only, at70)


def test_head_cells_are_reachable_and_usable_from_the_keyboard(tab):
    pg = tab.page
    tabbable = pg.eval_on_selector_all('#head-grid td[tabindex="0"]', "ts => ts.map(t => t.dataset.layer + ',' + t.dataset.head)")
    v = tab.view()["attrs"]
    assert tabbable == [f"{v['mapLayer']},{v['mapHead']}"]  # one cell in the Tab order: the current head
    assert pg.eval_on_selector_all('#head-grid td[tabindex="-1"]', "x => x.length") == 15
    pg.focus('#head-grid td[tabindex="0"]')
    pg.keyboard.press("Home")
    pg.keyboard.press("ArrowUp")
    pg.keyboard.press("ArrowUp")  # clamped at the top row
    for key in ("ArrowDown", "ArrowRight", "ArrowRight", "ArrowLeft", "ArrowDown", "ArrowDown"):
        pg.keyboard.press(key)
    layer = int(v["mapLayer"])
    want_layer = min(3, max(0, layer - 2) + 3)
    active = pg.evaluate("() => [document.activeElement.dataset.layer, document.activeElement.dataset.head]")
    assert active == [str(want_layer), "1"]
    assert tab.view()["attrs"]["mapLayer"] == v["mapLayer"]  # moving does not pick
    pg.keyboard.press("Enter")
    tab.ready()
    assert (tab.view()["attrs"]["mapLayer"], tab.view()["attrs"]["mapHead"]) == (str(want_layer), "1")
    assert pg.evaluate("() => document.activeElement.dataset.head") == "1"  # focus kept after the redraw
    pg.keyboard.press("ArrowRight")
    pg.keyboard.press(" ")
    tab.ready()
    assert (tab.view()["attrs"]["mapLayer"], tab.view()["attrs"]["mapHead"]) == (str(want_layer), "2")
    assert f"L{want_layer}H2" in pg.inner_text("#map-title")


def test_frequency_legend_in_counts(tab, toy_run):
    pg = tab.page
    heads = json.loads((toy_run / "heads.json").read_text())
    n = heads["n_samples"]
    assert f"{heads['heads'][0]['frequency']} of {n} samples" in pg.inner_text("#selected-heads")
    pg.click('#stat-tabs button[data-value="frequency"]')
    assert pg.inner_text("#grid-cbar-hi").strip().endswith(f"of {n} samples")
    assert pg.inner_text("#grid-cbar-lo").strip().isdigit()
    top = heads["heads"][0]
    title = pg.get_attribute(f'#head-grid td[data-layer="{top["layer"]}"][data-head="{top["head"]}"]', "title")
    assert f"selected in {top['frequency']} of {n} samples" in title, title
    assert f"in how many of the {n} samples" in pg.inner_text("#grid-cbar-label")


def test_the_page_opens_at_its_top_and_stepping_scrolls_only_the_list(tab):
    """Issue 31, item 4: picking the first sample used scrollIntoView, which scrolled the page (scrollY
    249 at 1280 x 720): the title and the model were off screen."""
    pg = tab.page
    pg.set_viewport_size({"width": 1280, "height": 720})
    url = pg.url
    pg.goto("about:blank")
    pg.goto(url)  # a fresh load (a reload would restore the scroll position)
    tab.ready()
    assert pg.evaluate("window.scrollY") == 0
    assert pg.evaluate("document.getElementById('title').getBoundingClientRect().top") >= 0
    for _ in range(15):
        pg.keyboard.press("j")
    tab.ready()
    assert tab.view()["attrs"]["mapSample"] == "15" and pg.evaluate("window.scrollY") == 0
    seen = pg.evaluate("""() => { const l = document.getElementById('sample-list').getBoundingClientRect();
        const r = document.querySelector('#samples-table tr.current').getBoundingClientRect();
        return r.top >= l.top && r.bottom <= l.bottom + 0.5; }""")
    assert seen  # the current row is inside the list's box


def _clipped_headers(pg) -> list[str]:
    return pg.eval_on_selector_all("#samples-table th", "ths => ths.filter(t => t.scrollWidth > t.clientWidth).map(t => t.textContent)")


def test_every_header_fits_its_column_with_the_sort_arrow(tab):
    pg = tab.page
    assert _clipped_headers(pg) == []
    for key in ("id", "correct", "iou", "entropy"):
        for _ in range(2):  # ascending, descending: the arrow is drawn
            pg.click(f'#samples-table th[data-sort="{key}"] button')
            assert _clipped_headers(pg) == [], key
    assert pg.inner_text('#samples-table th[data-sort="entropy"]').startswith("entropy")


@pytest.mark.parametrize("scheme, want", [
    ("planted_{i:05d}", lambda i: f"\u2026{i:05d}"),  # the shared "planted_" dropped
    ("coco_val2014_{i:012d}_ann_{i}", lambda i: f"\u2026{i:04d}_"),  # from just before where they differ
])
def test_ids_show_the_part_that_tells_samples_apart(browser, toy_run, tmp_path, scheme, want):
    """Issue 31, item 4: every planted id read `planted…`. The cell shows the distinguishing part,
    the full id stays in its title (and in the detail table, the map title and the filter)."""
    recs = [AttentionRecord.load(p) for p in sorted((toy_run / "attention").glob("*.safetensors"))]
    ids = [scheme.format(i=i) for i in range(len(recs))]
    for r, sid in zip(recs, ids):
        r.meta.sample_id = sid
    out = tmp_path / "index.html"
    out.write_text(explorer_html(toy_run, records=recs), encoding="utf-8")
    p = Page(browser, out.as_uri())
    p.ready()
    cells = p.page.eval_on_selector_all("#samples-table td.sid", "ts => ts.map(t => [t.textContent, t.title, t.scrollWidth <= t.clientWidth])")
    assert [c[1] for c in cells] == ids
    assert all(fit for _, _, fit in cells), cells  # no CSS ellipsis: the cell holds all its text
    assert len({c[0] for c in cells}) == len(ids)  # told apart
    assert all(c[0].startswith(want(i)) for i, c in enumerate(cells)), cells
    assert ids[0] in p.page.inner_text("#sample-detail")
    p.page.fill("#sample-filter", ids[3])
    assert p.page.inner_text("#sample-count") == "(1 / 16)"
    assert p.errors == [] and p.warnings == []
    p.close()


def test_the_visual_heads_panel_lists_the_named_heads_and_picks_one(tab, toy_run):
    """docs/visual_heads.md: the page shows visual_heads.json's "named" list as stage=select wrote it."""
    pg = tab.page
    named = json.loads((toy_run / "visual_heads.json").read_text())["named"]
    rows = pg.eval_on_selector_all("#visual-table tr[data-head-name]", "rs => rs.map(r => [r.dataset.headName, r.dataset.kind])")
    assert rows == [[f"L{h['layer']}H{h['head']}", h["kind"]] for h in named["heads"]] and rows
    assert pg.inner_text("#visual-summary").startswith(f"{len(named['heads'])} visual heads (")
    last = named["heads"][-1]
    pg.click(f'#visual-table tr[data-head-name="L{last["layer"]}H{last["head"]}"]')
    tab.ready()
    assert (tab.view()["attrs"]["mapLayer"], tab.view()["attrs"]["mapHead"]) == (str(last["layer"]), str(last["head"]))
