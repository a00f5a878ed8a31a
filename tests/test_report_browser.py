"""The run explorer in a real browser: Debian's Chromium driven by Playwright for Python.

Locally without Chromium or Playwright these tests skip and say why; under CI=true a missing
browser is a failure, so a skip cannot hide a broken install (.ci/run installs both).
"""

from __future__ import annotations

import json

from browser_page import Page
from report_data import geometry_run

from lab.report import write_explorer
from lab.report.notebook import iframe, show


def _only_local(requests: list[str]) -> list[str]:
    return [u for u in requests if not u.startswith(("file://", "data:", "about:"))]


def test_default_run_after_evaluate(browser, toy_run):
    p = Page(browser, (toy_run / "index.html").as_uri())
    p.ready()
    pg = p.page
    heads = json.loads((toy_run / "heads.json").read_text())
    names = [f"L{h['layer']}H{h['head']}" for h in heads["heads"]]
    table = pg.inner_text("#selected-heads")
    assert all(n in table for n in names), table
    # the numbers shown are metrics.json's
    metrics = json.loads((toy_run / "metrics.json").read_text())
    shown = pg.eval_on_selector_all("#metrics-table [data-metric]", "els => els.map(e => [e.dataset.metric, e.textContent])")
    assert len(shown) >= 12
    for key, text in shown:
        group, name = key.split(".", 1)
        want = metrics[group][name]
        assert text.replace("\u00b1", "").strip() == (str(want) if name == "n" else f"{want:.3f}"), key
    # 16 samples, one cell per head
    assert pg.locator("[data-sample]").count() >= 16
    L, H = heads["n_layers"], heads["n_heads"]
    assert pg.locator("[data-layer][data-head]").count() == L * H  # the grid's cells, nothing else
    before = p.view()
    assert before["attrs"]["mapLayer"] == str(heads["heads"][0]["layer"]) and before["attrs"]["mapSample"] == "0"
    pg.click('#head-grid td[data-layer="3"][data-head="1"]')
    p.ready()
    after_head = p.view()
    assert (after_head["attrs"]["mapLayer"], after_head["attrs"]["mapHead"]) == ("3", "1")
    assert after_head["pixels"] != before["pixels"]
    assert "L3H1" in pg.inner_text("#map-title")
    pg.click('tr[data-sample="7"]')
    p.ready()
    after_sample = p.view()
    assert after_sample["attrs"]["mapSample"] == "7" and after_sample["pixels"] != after_head["pixels"]
    assert "toy_0007" in pg.inner_text("#sample-detail")
    pg.click('#source-tabs button[data-value="combined"]')
    p.ready()
    assert p.view()["attrs"]["mapSource"] == "combined"
    assert "normalised to [0, 1]" in pg.inner_text("#cbar-label") and pg.inner_text("#cbar-hi") == "1"
    pg.click('#scope-tabs button[data-value="sample"]')
    pg.click('#stat-tabs button[data-value="entropy"]')
    assert "sample toy_0007" in pg.inner_text("#grid-cbar-label")
    assert p.errors == [] and p.warnings == [] and _only_local(p.requests) == []
    assert p.requests == [(toy_run / "index.html").as_uri()]  # nothing but the page itself
    p.close()


def test_token_slider(browser, toy_tokens_run):
    p = Page(browser, (toy_tokens_run / "index.html").as_uri())
    p.ready()
    pg = p.page
    assert pg.is_visible("#row-slider")
    first = p.view()
    pg.eval_on_selector("#row-slider", "s => { s.value = 1; s.dispatchEvent(new Event('input')); }")
    p.ready()
    second = p.view()
    assert second["attrs"]["mapRow"] == "1" and second["pixels"] != first["pixels"]
    assert "generated token 1" in pg.inner_text("#map-title")
    pg.click('#source-tabs button[data-value="all_mean"]')
    p.ready()
    assert p.view()["attrs"]["mapSource"] == "all_mean" and "mean of all heads" in pg.inner_text("#cbar-label")
    for source, title in (("weighted_mean", "VLM-Visualizer weighting"), ("vision_mean", "through the vision tower")):
        before = p.view()["pixels"]
        pg.click(f'#source-tabs button[data-value="{source}"]')
        p.ready()
        now = p.view()
        assert now["attrs"]["mapSource"] == source and title in pg.inner_text("#map-title")
        assert now["pixels"] != before
    assert p.errors == [] and _only_local(p.requests) == []
    p.close()


def _reddish(px) -> bool:
    return px[0] > 90 and px[0] > 2 * px[2]


def test_maps_land_on_the_records_geometry(browser, tmp_path):
    """Pad: the peak cell lies in the padding above the image; crop: inside the covered square,
    the rest of the image dimmed; anyres: the high-res grid, and the base grid on request."""
    geometry_run(tmp_path)
    ablation = {"baseline": {"accuracy": 1.0, "n": 3, "correct": 3},
                "selected_heads": {"accuracy": 0.3333333, "n": 3, "correct": 1, "changed_vs_baseline": 0.6666667, "heads": [[0, 0]]},
                "random_heads": {"mean": 0.8888889, "std": 0.1571348, "min": 0.6666667, "max": 1.0, "n": 3,
                                 "draws": [{"accuracy": 1.0, "changed_vs_baseline": 0.0}]},
                "settings": {"match": "exact"}, "samples": [{"id": "a_pad", "selected_heads": "blue", "selected_correct": False}]}
    (tmp_path / "ablation.json").write_text(json.dumps(ablation))
    write_explorer(tmp_path)
    p = Page(browser, (tmp_path / "index.html").as_uri())
    p.ready()
    pg = p.page
    pg.click('#head-grid td[data-layer="0"][data-head="0"]')
    p.ready()
    # pad 100x50: the square grid spans y -25..75, cells of 25 px; the peak is cell (0, 1): x 25..50, y -25..0
    assert _reddish(p.pixel(37, -12)) and p.pixel(37, -12)[:3] != p.pixel(37, 12)[:3]
    assert not _reddish(p.pixel(37, 12)) and not _reddish(p.pixel(80, -12))
    # crop: grid x 25..75 (cells of 12.5 px); peak (1, 2): x 50..62.5, y 12.5..25
    pg.click('tr[data-sample="1"]')
    p.ready()
    assert _reddish(p.pixel(56, 18)) and not _reddish(p.pixel(34, 18))  # (gt box edge at x = 30)
    outside = p.pixel(5, 40)  # not covered by the grid (nor the gt box): white image dimmed
    assert outside[0] == outside[1] == outside[2] and outside[0] < 180
    # anyres: high-res 4x4 grid over the whole image; peak (3, 0): x 0..25, y 37.5..50
    pg.click('tr[data-sample="2"]')
    p.ready()
    assert pg.is_visible("#grid-select") and p.view()["attrs"]["mapGrid"] == "highres"
    assert _reddish(p.pixel(12, 44)) and not _reddish(p.pixel(80, 10)) and p.pixel(12, 44) != p.pixel(45, 30)
    pg.select_option("#grid-select", "base")  # 2x2 cells of 50x25 px: one colour per cell
    p.ready()
    assert p.view()["attrs"]["mapGrid"] == "base" and p.pixel(12, 44) == p.pixel(45, 30) != p.pixel(55, 30)
    # stage=ablate's numbers, as a table
    shown = dict(pg.eval_on_selector_all("#ablation-table [data-metric]", "els => els.map(e => [e.dataset.metric, e.textContent])"))
    assert shown == {"ablation.baseline.accuracy": "1.000", "ablation.selected_heads.accuracy": "0.333",
                     "ablation.random_heads.accuracy": "0.889", "ablation.random_heads.std": " \u00b1 0.157"}
    pg.click('tr[data-sample="0"]')
    assert "blue (wrong)" in pg.inner_text("#sample-detail")
    assert p.errors == [] and _only_local(p.requests) == []
    p.close()


def test_notebook_iframe(browser, toy_run):
    page = show(toy_run, display=False)
    p = Page(browser, html=iframe(page, 900))
    frame = p.page.frame_locator("iframe")
    frame.locator('#map-view[data-state="ready"]').wait_for(timeout=10_000)
    assert frame.locator("[data-sample]").count() == 16
    frame.locator('#head-grid td[data-layer="2"][data-head="2"]').click()
    assert frame.locator("#map-view").get_attribute("data-map-layer") == "2"
    assert p.errors == [] and _only_local(p.requests) == []
    p.close()


HOSTILE = ["what shape is the yellow one? <!-- <script>", "a </script><script>window.pwned=1</script> &amp; <b>",
           "line\u2028sep\u2029para <!-- x --> <script>"]


def test_row_text_with_markup_cannot_blank_the_page(browser, tmp_path):
    """Issue 29.1: ids and prompts holding `<!-- <script>`, `</script>` and U+2028 / U+2029: every
    section is drawn, the code runs, and the texts are shown as they are."""
    from report_data import make_record, pad_layout, peaked, white_image

    from lab.records.record import record_path

    img = white_image(tmp_path / "w.png", 30, 20)
    lay = pad_layout(30, 20)
    for i, text in enumerate(HOSTILE):
        sid = f"{text} {i}"
        make_record(sid, img, lay, peaked(lay, (1, i)), query=text).save(record_path(tmp_path, sid))
    html = write_explorer(tmp_path).read_text(encoding="utf-8")
    data = html.split('id="lh-data">', 1)[1].split("</script>", 1)[0]
    assert not [c for c in ("<", ">", "&", "\u2028", "\u2029") if c in data]
    p = Page(browser, (tmp_path / "index.html").as_uri())
    p.ready()
    pg = p.page
    assert pg.evaluate("() => window.pwned") is None
    assert pg.locator("#samples-table tr[data-sample]").count() == 3 and pg.inner_text("#summary").strip()
    assert pg.locator("#head-grid td[data-layer]").count() == 6 and pg.inner_text("#selected-heads").strip()
    shown = pg.eval_on_selector_all("#samples-table td.prompt", "ts => ts.map(t => t.title)")
    assert sorted(shown) == sorted(HOSTILE)
    ids = pg.eval_on_selector_all("#samples-table tr[data-sample] td:first-child", "ts => ts.map(t => t.title)")
    assert sorted(ids) == sorted(f"{t} {i}" for i, t in enumerate(HOSTILE))
    pg.click(f'tr[data-sample="{ids.index(HOSTILE[2] + " 2")}"]')
    p.ready()
    assert HOSTILE[2] in pg.evaluate("() => document.getElementById('sample-detail').textContent")
    assert p.errors == [] and _only_local(p.requests) == []
    p.close()
