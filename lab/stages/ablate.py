"""stage=ablate: does masking the selected heads hurt the answers more than masking random heads?

See `lab.runs.conditions` for the conditions and the answer match; this module wires them to the config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lab.analysis import grounding as G
from lab.capture.station import warn_visual_head_padding
from lab import figures as plots
from lab.runs.conditions import format_table, run_condition
from lab.report import write_run_index
from lab.stages.batch import collect_batch
from lab.runs.heads_files import check_against_model, heads_to_use
from lab.runs.visual_heads_file import named_visual_heads
from lab.stages.context import StageContext
from lab.stages.select import select_stage
from utils.io import jsonable
from utils.settings.declarations import excluded_layers
from utils.data import load_selection
from utils.errors import UserError
from utils.io import atomic_write_json
from utils.images import load_image
from utils.settings.declarations import FinderConfig

log = logging.getLogger(__name__)


def _load_items(rows) -> tuple[list, list[tuple[str, str]]]:
    items, failed = [], []
    for row in rows:
        try:
            items.append((row, load_image(row.image_path)))
        except UserError as e:
            failed.append((row.id, str(e)))
            log.warning("skipping %s: %s", row.id, e)
    return items, failed


def _heads_for(cfg: FinderConfig, ctx: StageContext) -> tuple[list[tuple[int, int]], str]:
    """Heads to mask: `heads_file=` (its top_k), else the folder's heads.json (unless reselect=true), else
    collect + select on this JSONL."""
    chosen = heads_to_use(cfg.heads_file, cfg.reselect, ctx.output_dir, cfg.top_k, "ablate")
    if chosen is not None:
        return chosen.heads, str(cfg.heads_file or chosen.path)
    rows, _ = collect_batch(cfg, ctx, require=("answer",))
    heads = [tuple(int(x) for x in h) for h in select_stage(cfg, ctx, ids=[row.id for row in rows])["heads"]]
    return heads, "selected on the fly from this run"


def ablate_stage(cfg: FinderConfig, ctx: StageContext) -> dict:
    """Accuracy: baseline vs selected heads masked vs random heads masked; see the module docstring."""
    ab = cfg.ablation  # its values were checked with the config (utils/settings/reading.py, run_stage)
    match = ab.match
    rows = load_selection(cfg.data_file, ("answer",), cfg.start_index, cfg.end_index, cfg.shard).rows
    heads, source = _heads_for(cfg, ctx)
    if not heads:
        raise UserError("no heads to ablate: heads_file has none, or no head passed selection (try selection.exclude_layers=[])")
    vlm = ctx.load_vlm()
    L, Hn = vlm.num_layers, vlm.num_heads
    check_against_model(heads, cfg.selection.exclude_layers, L, Hn, source)
    exclude = excluded_layers(cfg.selection.exclude_layers, L)
    try:
        draws = G.random_head_sets(L, Hn, len(heads), ab.random_draws, cfg.seed,
                                   exclude_layers=exclude, exclude_heads=heads)
    except ValueError as e:
        log.warning("no random-heads baseline: %s", e)
        draws = []
    items, failed = _load_items(rows)
    if not items:
        raise UserError(f"no row of {cfg.data_file} has a readable image; see the warnings above")

    kw = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, match=match,
              maskout_mode=ab.maskout_mode, steps=ab.steps)
    warn_visual_head_padding(ab.maskout_mode, True, cfg.batch_size, "ablation")
    visual = named_visual_heads(Path(ctx.output_dir), (L, Hn)) if ab.visual_heads else None
    bar = tqdm(total=len(items) * (2 + len(draws) + bool(visual)), desc="ablate", unit="answer", disable=len(items) < 20)
    base = run_condition(vlm, items, [], name="baseline", progress=bar, **kw)
    if base.failed:  # rows the model cannot answer at all are left out of every condition
        failed += list(base.failed.items())
        items = [it for it in items if it[0].id not in base.failed]
        if not items:
            raise UserError(f"the model answered no row of {cfg.data_file}: {failed[0][0]}: {failed[0][1]}")
    sel = run_condition(vlm, items, heads, name="selected_heads", progress=bar, **kw)
    vis = run_condition(vlm, items, visual[0], name="visual_heads", progress=bar, **kw) if visual else None
    rnd = [run_condition(vlm, items, d, name=f"random_{i}", progress=bar, **kw) for i, d in enumerate(draws)]
    bar.close()

    result = _ablation_result(cfg, vlm.model_id, items, failed, heads, source, exclude, base, sel, rnd)
    if vis is not None:
        result["visual_heads"] = {**vis.summary(base), "heads": [list(h) for h in vis.heads], "source": visual[1]}
    by_group = _by_group(items, base, sel, rnd)
    if by_group:
        result["by_group"] = by_group
    out = Path(ctx.output_dir)
    path = atomic_write_json(out / "ablation.json", jsonable(result))
    fig = _report(result, by_group, len(heads), match, len(items), out)
    print(f"ablation: {path}")
    write_run_index(out, cfg=cfg)
    return {"ablation_file": str(path), "figure": str(fig), "baseline": result["baseline"],
            "selected_heads": result["selected_heads"], "random_heads": {k: v for k, v in result["random_heads"].items() if k != "draws"}}


def _ablation_result(cfg: FinderConfig, model_id: str, items, failed, heads, source: str, exclude, base, sel, rnd) -> dict:
    """ablation.json: each condition's accuracy and changed answers, the random draws' spread, the
    settings, the failed rows and every row's answers."""
    ab, match = cfg.ablation, cfg.ablation.match
    accs = [r.accuracy for r in rnd]
    random_block: dict[str, Any] = {
        "mean": float(np.mean(accs)) if accs else None,
        "std": float(np.std(accs)) if accs else None,
        "min": float(np.min(accs)) if accs else None,
        "max": float(np.max(accs)) if accs else None,
        "n": len(items),
        "draws": [{**r.summary(base), "heads": [list(h) for h in r.heads]} for r in rnd],
    }
    if not accs:
        random_block["note"] = "no random draw possible (too few heads outside the selected ones and excluded layers)"
    result = {
        "baseline": base.summary(),
        "selected_heads": {**sel.summary(base), "heads": [list(h) for h in heads], "source": source},
        "random_heads": random_block,
        "settings": {"match": match, "random_draws": len(rnd), "maskout_mode": ab.maskout_mode,
                     "steps": ab.steps, "top_k": len(heads), "seed": cfg.seed,
                     "exclude_layers": exclude, "max_new_tokens": cfg.max_new_tokens,
                     "data_file": cfg.data_file, "model_id": model_id},
        "failed": [{"id": i, "reason": r} for i, r in failed],
        "samples": [{"id": row.id, "answer": row.answer, "baseline": base.answers[row.id],
                     "selected_heads": sel.answers.get(row.id), "baseline_correct": base.correct[row.id],
                     "selected_correct": sel.correct.get(row.id)} for row, _ in items],
    }
    return result


def _report(result: dict, by_group: dict, n_heads: int, match: str, n: int, out: Path):
    """The bar chart (figures/ablation.png) and the printed tables, overall and per group."""
    base_acc, sel_acc, random_block = result["baseline"]["accuracy"], result["selected_heads"]["accuracy"], result["random_heads"]
    accs = random_block["mean"] is not None
    names = ["baseline", "selected heads", "random heads"]
    values = [base_acc, sel_acc, random_block["mean"] if accs else float("nan")]
    errors = [float("nan"), float("nan"), random_block["std"] if accs else float("nan")]
    if "visual_heads" in result:
        names, values, errors = names + ["visual heads"], values + [result["visual_heads"]["accuracy"]], errors + [float("nan")]
    fig = plots.bar_chart(names, values, errors, out / "figures" / "ablation.png",
                          title=f"answer accuracy ({n_heads} heads masked, {match} match, n={n})",
                          ylabel="accuracy")
    print(format_table(result))
    for group, acc in by_group.items():
        rnd_txt = f"{acc['random_heads']:.3f}" if acc["random_heads"] is not None else "-"
        print(f"  {group}: baseline {acc['baseline']:.3f}, selected heads masked {acc['selected_heads']:.3f}, "
              f"random heads masked {rnd_txt} (n={acc['n']})")
    return fig


def _by_group(items, base, sel, rnd) -> dict[str, dict]:
    """Accuracy of each condition within each row `group` (random: the mean over draws); {} when no row names one."""
    groups = sorted({str(row.group) for row, _ in items if row.group is not None})
    out = {}
    for group in groups:
        ids = [row.id for row, _ in items if str(row.group) == group]

        def acc(r) -> float:
            return float(np.mean([r.correct[i] for i in ids if i in r.correct]))

        out[group] = {"baseline": acc(base), "selected_heads": acc(sel),
                      "random_heads": float(np.mean([acc(r) for r in rnd])) if rnd else None, "n": len(ids)}
    return out
