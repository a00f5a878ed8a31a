"""Ablation (Bi et al.): answer accuracy with heads masked out; the conditions and the answer match.

stage=ablate (`lab.stages.ablate`) answers every row of a JSONL with an "answer" three ways:

* baseline: no intervention;
* selected heads masked out (from `heads_file=`, else selected on the fly: collect + `select_stage`);
* with `ablation.visual_heads=true`, the run's named visual heads masked out (visual_heads.json,
  docs/visual_heads.md);
* as many random heads masked out, `ablation.random_draws` seeded draws (excluding the selected
  heads and `selection.exclude_layers`), reported as mean and spread.

Accuracy is a normalised match of the generated answer against "answer" (lower case, punctuation
and articles dropped, number words as digits): `ablation.match=exact` compares the first word(s)
of the answer (as many words as the reference has), `contains` looks for the reference anywhere.
The stage writes `ablation.json`, `figures/ablation.png` and prints `format_table`.
"""

from __future__ import annotations

import logging
import re
import string
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from lab.capture.station import Strategy, collect
from utils.errors import UserError
from utils.contracts.vlm import VisionLanguageModel

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
    failed: dict[str, str] = field(default_factory=dict)  # row id -> why the model could not answer it

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


def run_condition(vlm: VisionLanguageModel, items: Sequence[tuple[Any, Any]], heads: Sequence[tuple[int, int]], *, name: str,
                  batch_size: int, max_new_tokens: int, match: Match, maskout_mode: str = "zero",
                  steps: str = "all", progress: Any = None) -> ConditionResult:
    """Answer every (row, image) with `heads` masked out (none = baseline); capture off for speed."""
    strategy = Strategy(maskout=[list(h) for h in heads], maskout_mode=maskout_mode, steps=steps,  # type: ignore[arg-type]
                        capture=False)
    res = ConditionResult(name, [tuple(h) for h in heads])
    bs = max(1, int(batch_size))

    def answer(chunk) -> None:
        recs = collect(vlm, [(img, row.prompt, row.id, row.image_path) for row, img in chunk], strategy,
                       max_new_tokens=max(1, int(max_new_tokens)))
        for (row, _), rec in zip(chunk, recs):
            res.answers[row.id] = rec.meta.generated_text
            res.correct[row.id] = answer_correct(rec.meta.generated_text, row.answer, match)

    for start in range(0, len(items), bs):
        chunk = items[start: start + bs]
        try:
            answer(chunk)
        except Exception:  # noqa: BLE001 - isolate the row the model cannot answer; the others go on
            for item in chunk:
                try:
                    answer([item])
                except Exception as e:  # noqa: BLE001
                    res.failed[item[0].id] = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                    log.warning("%s: %s: %s", name, item[0].id, res.failed[item[0].id])
        if progress is not None:
            progress.update(len(chunk))
    return res


def format_table(result: dict) -> str:
    """A few lines: accuracy per condition, and how many answers the masking changed."""
    lines = [f"{'':16s} {'accuracy':>9s} {'changed':>8s} {'n':>5s}"]
    for key in ("baseline", "selected_heads", "visual_heads"):
        if key not in result:
            continue
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
