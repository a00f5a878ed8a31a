"""stage=ablate: does masking the selected heads hurt the answers more than masking random heads?

On a JSONL whose rows carry an "answer", the model answers every row three ways:

* baseline: no intervention;
* selected heads masked out (from `heads_file=`, else selected on the fly: collect + `select_stage`);
* as many random heads masked out, `ablation.random_draws` seeded draws (excluding the selected
  heads and `selection.exclude_layers`), reported as mean and spread.

Accuracy is a normalised match of the generated answer against "answer" (lower case, punctuation
and articles dropped, number words as digits): `ablation.match=exact` compares the first word(s)
of the answer (as many words as the reference has), `contains` looks for the reference anywhere.
Writes `ablation.json`, `figures/ablation.png` and prints a small table.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from lab.stations import Strategy, collect
from utils.errors import UserError

log = logging.getLogger(__name__)

Match = Literal["exact", "contains"]
ARTICLES = {"a", "an", "the"}
NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


# ---- answer matching ------------------------------------------------------------------------
def normalize_answer(text: str) -> list[str]:
    """Words of an answer: lower case, punctuation and articles dropped, number words as digits."""
    words = _PUNCT.sub(" ", str(text).lower()).split()
    return [NUMBERS.get(w, w) for w in words if w not in ARTICLES]


def answer_correct(prediction: str, reference: str, match: Match = "exact") -> bool:
    """`exact`: the prediction's first len(reference) words are the reference; `contains`: the
    reference's words appear contiguously anywhere in the prediction."""
    if match not in ("exact", "contains"):
        raise UserError(f"ablation.match={match!r} is not valid: use exact or contains")
    ref, pred = normalize_answer(reference), normalize_answer(prediction)
    if not ref:  # a reference made only of articles/punctuation: compare the raw lower-cased strings
        return str(prediction).strip().lower() == str(reference).strip().lower()
    if match == "exact":
        return pred[: len(ref)] == ref
    n = len(ref)
    return any(pred[i: i + n] == ref for i in range(len(pred) - n + 1))


# ---- running the conditions ------------------------------------------------------------------
@dataclass
class ConditionResult:
    """Answers of one condition (one head set masked out) over the evaluated rows."""

    name: str
    heads: list[tuple[int, int]]
    answers: dict[str, str] = field(default_factory=dict)  # row id -> generated text
    correct: dict[str, bool] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return float(np.mean(list(self.correct.values()))) if self.correct else float("nan")

    def changed_vs(self, other: "ConditionResult") -> float:
        """Fraction of rows whose answer differs from `other`'s."""
        ids = [i for i in self.answers if i in other.answers]
        return float(np.mean([self.answers[i] != other.answers[i] for i in ids])) if ids else float("nan")

    def summary(self, baseline: "ConditionResult | None" = None) -> dict[str, Any]:
        d: dict[str, Any] = {"accuracy": self.accuracy, "n": self.n, "correct": int(sum(self.correct.values()))}
        if baseline is not None and baseline is not self:
            d["changed_vs_baseline"] = self.changed_vs(baseline)
        return d


def run_condition(vlm: Any, items: Sequence[tuple[Any, Any]], heads: Sequence[tuple[int, int]], *, name: str,
                  batch_size: int, max_new_tokens: int, match: Match, maskout_mode: str = "zero",
                  steps: str = "all", progress: Any = None) -> ConditionResult:
    """Answer every (row, image) with `heads` masked out (none = baseline); capture off for speed."""
    strategy = Strategy(maskout=[list(h) for h in heads], maskout_mode=maskout_mode, steps=steps,  # type: ignore[arg-type]
                        capture=False)
    res = ConditionResult(name, [tuple(h) for h in heads])
    bs = max(1, int(batch_size))
    for start in range(0, len(items), bs):
        chunk = items[start: start + bs]
        recs = collect(vlm, [(img, row.prompt, row.id, row.image_path) for row, img in chunk], strategy,
                       max_new_tokens=max(1, int(max_new_tokens)))
        for (row, _), rec in zip(chunk, recs):
            res.answers[row.id] = rec.meta.generated_text
            res.correct[row.id] = answer_correct(rec.meta.generated_text, row.answer, match)
        if progress is not None:
            progress.update(len(chunk))
    return res


def _load_items(rows) -> tuple[list, list[tuple[str, str]]]:
    from utils.io import load_image

    items, failed = [], []
    for row in rows:
        try:
            items.append((row, load_image(row.image_path)))
        except UserError as e:
            failed.append((row.id, str(e)))
            log.warning("skipping %s: %s", row.id, e)
    return items, failed


def _heads_for(cfg, ctx) -> tuple[list[tuple[int, int]], str]:
    """Heads to mask: `heads_file=` (its top_k), else collect + select on this JSONL."""
    from lab import stages as S

    if cfg.heads_file:
        return S.heads_from_file(cfg.heads_file, cfg.top_k), str(cfg.heads_file)
    S._batch_collect(cfg, ctx, require=("answer",))
    heads = [tuple(int(x) for x in h) for h in S.select_stage(cfg, ctx)["heads"]]
    return heads, "selected on the fly from this run"


def ablate_stage(cfg, ctx) -> dict:
    """Accuracy: baseline vs selected heads masked vs random heads masked; see the module docstring."""
    from tqdm import tqdm

    from lab import grounding as G
    from lab import plots
    from lab import stages as S
    from lab.heads import jsonable
    from utils.data import load_rows, select_rows
    from utils.io import atomic_write_json

    ab = cfg.ablation
    match = str(ab.match)
    if match not in ("exact", "contains"):
        raise UserError(f"ablation.match={match!r} is not valid: use exact or contains")
    if int(ab.random_draws) < 0:
        raise UserError(f"ablation.random_draws={ab.random_draws} must be >= 0")
    if ab.maskout_mode not in ("zero", "uniform"):
        raise UserError(f"ablation.maskout_mode={ab.maskout_mode!r} is not valid: use zero or uniform")
    if ab.steps not in ("all", "prefill"):
        raise UserError(f"ablation.steps={ab.steps!r} is not valid: use all or prefill")
    rows = select_rows(load_rows(cfg.data_file, require=("answer",)), cfg.start_index, cfg.end_index, cfg.shard)
    heads, source = _heads_for(cfg, ctx)
    if not heads:
        raise UserError("no heads to ablate: heads_file has none, or no head passed selection (try selection.exclude_layers=[])")
    vlm = ctx.load_vlm()
    L, Hn = vlm.num_layers, vlm.num_heads
    bad = [h for h in heads if not (0 <= h[0] < L and 0 <= h[1] < Hn)]
    if bad:
        raise UserError(f"heads {bad} are outside the model's {L} layers x {Hn} heads (heads_file={cfg.heads_file})")
    from utils.config import excluded_layers

    exclude = excluded_layers(cfg.selection.exclude_layers, L)
    try:
        draws = G.random_head_sets(L, Hn, len(heads), int(ab.random_draws), int(cfg.seed),
                                   exclude_layers=exclude, exclude_heads=heads)
    except ValueError as e:
        log.warning("no random-heads baseline: %s", e)
        draws = []
    items, failed = _load_items(rows)
    if not items:
        raise UserError(f"no row of {cfg.data_file} has a readable image; see the warnings above")

    kw = dict(batch_size=int(cfg.batch_size), max_new_tokens=int(cfg.max_new_tokens), match=match,
              maskout_mode=str(ab.maskout_mode), steps=str(ab.steps))
    bar = tqdm(total=len(items) * (2 + len(draws)), desc="ablate", unit="answer", disable=len(items) < 20)
    base = run_condition(vlm, items, [], name="baseline", progress=bar, **kw)
    sel = run_condition(vlm, items, heads, name="selected_heads", progress=bar, **kw)
    rnd = [run_condition(vlm, items, d, name=f"random_{i}", progress=bar, **kw) for i, d in enumerate(draws)]
    bar.close()

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
        "settings": {"match": match, "random_draws": len(draws), "maskout_mode": str(ab.maskout_mode),
                     "steps": str(ab.steps), "top_k": len(heads), "seed": int(cfg.seed),
                     "exclude_layers": exclude, "max_new_tokens": int(cfg.max_new_tokens),
                     "data_file": str(cfg.data_file), "model_id": vlm.model_id},
        "failed": [{"id": i, "reason": r} for i, r in failed],
        "samples": [{"id": row.id, "answer": row.answer, "baseline": base.answers[row.id],
                     "selected_heads": sel.answers[row.id], "baseline_correct": base.correct[row.id],
                     "selected_correct": sel.correct[row.id]} for row, _ in items],
    }
    out = Path(ctx.output_dir)
    path = atomic_write_json(out / "ablation.json", jsonable(result))
    names = ["baseline", "selected heads", "random heads"]
    values = [base.accuracy, sel.accuracy, random_block["mean"] if accs else float("nan")]
    errors = [float("nan"), float("nan"), random_block["std"] if accs else float("nan")]
    fig = plots.bar_chart(names, values, errors, out / "figures" / "ablation.png",
                          title=f"answer accuracy ({len(heads)} heads masked, {match} match, n={len(items)})",
                          ylabel="accuracy")
    print(format_table(result))
    print(f"ablation: {path}")
    S.write_index(out, {"ablation": str(path)})
    return {"ablation_file": str(path), "figure": str(fig), "baseline": result["baseline"],
            "selected_heads": result["selected_heads"], "random_heads": {k: v for k, v in random_block.items() if k != "draws"}}


def format_table(result: dict) -> str:
    """A few lines: accuracy per condition, and how many answers the masking changed."""
    lines = [f"{'':16s} {'accuracy':>9s} {'changed':>8s} {'n':>5s}"]
    for key in ("baseline", "selected_heads"):
        r = result[key]
        ch = r.get("changed_vs_baseline")
        lines.append(f"{key:16s} {r['accuracy']:9.3f} {'-' if ch is None else f'{ch:.3f}':>8s} {r['n']:5d}")
    rb = result["random_heads"]
    if rb["mean"] is not None:
        ch = np.mean([d["changed_vs_baseline"] for d in rb["draws"]])
        lines.append(f"{'random_heads':16s} {rb['mean']:9.3f} {ch:8.3f} {rb['n']:5d}  "
                     f"(+/- {rb['std']:.3f} over {len(rb['draws'])} draws)")
    else:
        lines.append(f"{'random_heads':16s} {'n/a':>9s}")
    return "\n".join(lines)
