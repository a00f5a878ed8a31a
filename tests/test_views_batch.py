"""visualize_attention.py mode=batch: with data_file= the page lists only that JSONL's ids; a progress
bar on stderr counts the records when stderr is a terminal (none otherwise)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from helpers import make_cfg
from report_data import page_data

from lab.sessions.views import run_view
from lab.stages import StageContext

ROOT = Path(__file__).resolve().parents[1]


def batch(out: Path, *overrides: str) -> dict:
    cfg = make_cfg("mode=batch", f"output_dir={out}", *overrides, config_name="visualization_config")
    return run_view(cfg, StageContext(loader=lambda: None, output_dir=out))


def subset_jsonl(path: Path, ids: list[str]) -> Path:
    rows = [json.loads(l) for l in (ROOT / "examples/toy/toy_grounding.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    path.write_text("".join(json.dumps(by_id[i]) + "\n" for i in ids))
    return path


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_data_file_page_lists_only_its_ids(toy_run, tmp_path, capsys):
    folder = toy_run / "attention"
    n_folder = len(list(folder.glob("*.safetensors")))
    assert n_folder == 16
    want = ["toy_0001", "toy_0004", "toy_0009"]
    data = subset_jsonl(tmp_path / "three.jsonl", [*want, "toy_0200"])  # toy_0200: no record in the folder
    out = tmp_path / "view"
    res = batch(out, f"data_file={data}", f"attention_dir={folder}", f"heads_file={toy_run / 'heads.json'}")
    assert len(res["figures"]) == 3 and not res["failed"]
    assert sorted(Path(f).name for f in res["figures"]) == [f"{i}_heads.png" for i in want]
    page = page_data(Path(res["index"]).read_text(encoding="utf-8"))
    assert [s["id"] for s in page["samples"]] == want
    assert any("3 of the folder's 16 records" in n for n in page["notes"])
    # without data_file= the whole folder is listed, as before
    res_all = batch(tmp_path / "all", f"attention_dir={folder}", f"heads_file={toy_run / 'heads.json'}")
    page_all = page_data(Path(res_all["index"]).read_text(encoding="utf-8"))
    assert len(page_all["samples"]) == n_folder
    assert not any("of the folder's" in n for n in page_all["notes"])


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_counts_records(toy_run, tmp_path, monkeypatch, tty):
    err = TTY() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    folder = toy_run / "attention"
    data = subset_jsonl(tmp_path / "five.jsonl", [f"toy_{i:04d}" for i in range(5)])
    res = batch(tmp_path / "v", f"data_file={data}", f"attention_dir={folder}", f"heads_file={toy_run / 'heads.json'}")
    assert len(res["figures"]) == 5
    text = err.getvalue()
    if tty:
        assert "figures" in text and "5/5" in text and "record" in text
        assert "0/5" in text  # the bar was there from the start
    else:
        assert "5/5" not in text and "figures:" not in text  # no bar when stderr is not a terminal
