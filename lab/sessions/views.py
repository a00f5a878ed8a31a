"""visualize_attention.py's views of saved records: one record (a chosen head or the top-k), a folder,
or one record's per-token maps (mode=tokens, lab/sessions/token_view.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lab.records.record import AttentionRecord, record_file
from lab.report import write_run_index
from lab.report.page_settings import run_folder_of, run_settings
from lab.stages.common import record_files
from lab.records.folder import NameCheck, refuse_live_writer
from lab.stages.context import StageContext
from lab.stages.visualize import draw_overlay, figure_numbers, figure_result, record_settings, short_text, visualize_record
from lab.sessions.token_view import tokens_view
from utils.data import file_stem, load_rows
from utils.errors import UserError
from utils.settings.reading import settings_from_config
from utils.settings.declarations import VisualizeConfig

log = logging.getLogger(__name__)


def _single_head(rec: AttentionRecord, cfg: VisualizeConfig, out_dir: Path) -> dict:
    """One head's map, its smoothed map's box (the run's grounding settings) and `<figure>.json`."""
    layer, head = int(cfg.layer), int(cfg.head)
    st = record_settings(rec, cfg)
    numbers = figure_numbers(rec, [(layer, head)], st)
    path = draw_overlay(rec, cfg, numbers, st, out_dir / f"{file_stem(rec.meta.sample_id)}_L{layer}H{head}.png",
                        f"L{layer}H{head}: {short_text(rec.meta.query)}")
    return figure_result(path, numbers, st)


def single_view(cfg: VisualizeConfig, ctx: StageContext) -> dict:
    if not cfg.attention_file:
        raise UserError("mode=single needs attention_file=<record .safetensors>")
    if (cfg.layer is None) != (cfg.head is None):
        raise UserError("give both layer= and head= (or neither, for the top_k heads)")
    rec = AttentionRecord.load(cfg.attention_file)
    out = ctx.output_dir / "figures"
    if cfg.layer is not None:
        res = _single_head(rec, cfg, out)
    else:
        res = visualize_record(rec, cfg, out, heads_file=cfg.heads_file)
    print(f"figure: {res['figure']}  (settings: {res['settings_source']})")
    return res


def batch_view(cfg: VisualizeConfig, ctx: StageContext) -> dict:
    """Overlays for every record of a folder (or of a JSONL's ids) + index.html (listing the same
    records). A progress bar on stderr counts the records when stderr is a terminal."""
    ids = None
    if cfg.data_file:
        rows = load_rows(cfg.data_file)
        folder = Path(cfg.attention_dir) if cfg.attention_dir else None
        if folder is None:
            raise UserError("mode=batch with data_file= needs attention_dir=<run folder>/attention holding its records")
        ids = [r.id for r in rows]
        files = [record_file(folder, i) for i in ids]  # the same id -> file name mapping as the batch
        missing = [str(f) for f in files if not os.path.lexists(f)]
        if missing:
            log.warning("%d record(s) missing, e.g. %s", len(missing), missing[0])
        files = [f for f in files if os.path.lexists(f)]
    else:
        if not cfg.attention_dir:
            raise UserError("mode=batch needs attention_dir=<folder of records> or data_file= + attention_dir=")
        files = record_files(Path(cfg.attention_dir))
    if cfg.attention_dir:
        refuse_live_writer(Path(cfg.attention_dir))
    names = NameCheck()
    out = ctx.output_dir / "figures" / "samples"
    done, failed = [], []
    bar = tqdm(files, desc="figures", unit="record", disable=None)  # disable=None: off unless stderr is a TTY
    with logging_redirect_tqdm(), bar:  # warnings print above the bar, not through it
        for f in bar:
            try:
                rec = AttentionRecord.load(f)
                names.add(f, rec)
                done.append(visualize_record(rec, cfg, out, heads_file=cfg.heads_file)["figure"])
            except UserError as e:
                failed.append((str(f), str(e)))
                log.warning("%s", e if str(f) in str(e) else f"{f}: {e}")
    st = run_settings(run_folder_of(files[0]) if files else None, cfg.selection, cfg.grounding, int(cfg.top_k))
    page_cfg = dataclasses.replace(cfg, selection=st.selection, grounding=st.grounding, top_k=st.top_k)  # the records' run's
    index = write_run_index(ctx.output_dir, cfg=page_cfg, ids=ids)
    print(f"{len(done)} figure(s) in {out}, {len(failed)} failed; index: {index}  (settings: {st.source})")
    return {"figures": done, "failed": failed, "index": str(index)}


VIEWS = {"single": single_view, "batch": batch_view, "tokens": tokens_view}


def run_view(cfg: VisualizeConfig, ctx: StageContext) -> dict:
    """Dispatch `cfg.mode` (`utils.settings.declarations.VisualizeConfig`, or a composed config from Python)."""
    cfg = settings_from_config(cfg)
    if cfg.mode not in VIEWS:
        raise UserError(f"unknown mode={cfg.mode!r}; valid modes: {', '.join(VIEWS)}")
    return VIEWS[cfg.mode](cfg, ctx)
