"""Selection across samples: criterion-1 threshold on mean S_img, k lowest-entropy heads per sample, frequency."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from lab.analysis.per_sample import SampleAnalysis
from lab.criteria.elbow import Elbow, elbow_threshold
from lab.criteria.image_sum import excluded_list, layer_mask
from utils.settings.choices import ElbowMethod
from utils.settings.declarations import TOP_K, SelectionConfig, heads_per_sample
from utils.io import jsonable


@dataclass
class Selection:
    """Result of `select_heads`.

    heads: the ``top_k`` localization heads (first ``top_k`` of ``ranked``).
    ranked: every head chosen at least once, most frequent first; each a dict
    ``{"layer", "head", "frequency", "frequency_ratio", "mean_s_img", "mean_entropy"}``
    (frequency = number of samples in which the head was among the ``k`` lowest-entropy eligible
    heads; frequency_ratio = frequency / N; mean_entropy over the samples where it is finite).
    Arrays ``[L, H]``: frequency, mean_s_img, mean_entropy, eligible (criterion 1 and not an
    excluded layer), selected (the ``top_k``). per_sample_choices ``[N, k]``: flat head indices
    ``layer * H + head`` chosen in each sample (-1 = fewer than k eligible heads).
    """

    heads: list[dict[str, Any]]
    ranked: list[dict[str, Any]]
    threshold: float
    elbow: Elbow
    settings: dict[str, Any]
    n_samples: int
    n_layers: int
    n_heads: int
    frequency: np.ndarray
    mean_s_img: np.ndarray
    mean_entropy: np.ndarray
    eligible: np.ndarray
    selected: np.ndarray
    per_sample_choices: np.ndarray

    @property
    def head_list(self) -> list[tuple[int, int]]:
        """The localization heads as ``(layer, head)`` pairs."""
        return [(d["layer"], d["head"]) for d in self.heads]

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON dict (non-finite floats -> null): heads, ranked, threshold, elbow, settings."""
        return jsonable(
            {
                "heads": self.heads,
                "ranked": self.ranked,
                "threshold": self.threshold,
                "elbow": self.elbow.to_dict(),
                "settings": self.settings,
                "n_samples": self.n_samples,
                "n_layers": self.n_layers,
                "n_heads": self.n_heads,
                "n_eligible": int(self.eligible.sum()),
            }
        )

    def summary(self) -> str:
        lines = [
            f"{self.n_samples} samples, {self.n_layers} layers x {self.n_heads} heads",
            (f"criterion 1 per sample ({self.elbow.method}" if self.elbow.method_used == "per_sample" else
             f"criterion-1 threshold {self.threshold:.3f} ({self.elbow.method_used}")
            + (f"; {self.elbow.note}" if self.elbow.note else "")
            + f"): {int(self.eligible.sum())} eligible heads",
        ]
        for i, d in enumerate(self.heads, 1):
            me = d["mean_entropy"]
            lines.append(
                f"{i}. L{d['layer']}H{d['head']}: chosen {d['frequency']}/{self.n_samples} "
                f"({d['frequency_ratio']:.2f}), mean S_img {d['mean_s_img']:.3f}, "
                f"mean entropy {'n/a' if me is None or not np.isfinite(me) else f'{me:.3f}'}"
            )
        return "\n".join(lines)


# Below this many samples a head's selection frequency says little: its ratio has a binomial standard
# error of up to 0.5 / sqrt(N) (0.05 at N = 100, 0.35 at N = 2), as large as the gaps between the heads
# it ranks. Kang et al. select over 1,000 samples.
MIN_SAMPLES = 100
PAPER_SAMPLES = 1000


def sample_count_warning(n_samples: int, minimum: int = MIN_SAMPLES) -> str | None:
    """The warning for a selection over fewer than `minimum` samples, or None when there are enough."""
    if n_samples >= minimum:
        return None
    se = 0.5 / np.sqrt(max(n_samples, 1))
    return (f"selection over {n_samples} sample{'s' if n_samples != 1 else ''}: below {minimum} samples the "
            f"selection frequency means little (standard error of a head's ratio up to {se:.2f}); "
            f"the paper selected over {PAPER_SAMPLES:,} samples")


def _nanmean0(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0)


def select_heads(
    s_img: np.ndarray,
    entropy: np.ndarray,
    sel: SelectionConfig = SelectionConfig(),
    top_k: int = TOP_K,
    *,
    exclude_layers: Iterable[int] = (0, 1),
    bottom_row_mask: np.ndarray | None = None,
    threshold: float | None = None,
    sample_mask: np.ndarray | None = None,
) -> Selection:
    """Pick the localization heads from per-sample statistics ``s_img[N, L, H]`` and
    ``entropy[N, L, H]`` (e.g. stacked `SampleAnalysis` fields).

    Args:
        sel: the `selection.*` settings: ``elbow.method``, ``elbow.include_excluded``, ``tie_break``
            and k (`heads_per_sample`: ``selection.k``, 10 when unset; ``top_k`` with ranking=per_sample).
        top_k: the localization heads kept (the ``top_k=`` key).
        exclude_layers: excluded layers as indices on the L axis.

    1. Criterion 1: the heads' ``S_img`` averaged over the N samples (NaN ignored) -> elbow
       threshold (`elbow_threshold` with ``sel.elbow.method``) computed over the
       heads of the non-excluded layers (all heads with ``sel.elbow.include_excluded``);
       ``threshold`` overrides it. Heads with mean ``S_img >= threshold`` outside the excluded
       layers are eligible.
    2. In each sample, the eligible heads with a finite entropy (and, when ``bottom_row_mask``
       ``[N, L, H]`` is given, not flagged True there = bottom-row artifact in that sample) are
       ranked by spatial entropy ascending (ties: higher per-sample S_img first, then lower
       head index) and the ``k`` lowest are chosen. ``inf``/``nan`` entropies are never chosen.
    3. Heads are ranked by how many samples chose them (ties: lower mean entropy, then higher
       mean S_img); the first ``top_k`` are the localization heads.

    ``sample_mask`` ``[N, L, H]`` replaces steps 1-2's eligibility: the heads each sample may
    choose, decided per sample by the caller (e.g. criterion 1 on each sample's own curve); no
    mean elbow is computed (``threshold`` is NaN) and a masked head is chosen even with an infinite
    entropy (after the finite ones). ``sel.tie_break="index"`` orders equal entropies in a sample by
    (layer, head) instead of by higher S_img.
    """
    k, tie_break, elbow_method = heads_per_sample(sel, top_k), sel.tie_break, sel.elbow.method
    elbow_include_excluded = sel.elbow.include_excluded
    s, e, bmask = _checked_inputs(s_img, entropy, k, top_k, bottom_row_mask, sample_mask, tie_break)
    N, L, H = s.shape
    keep_layers = np.broadcast_to(layer_mask(L, exclude_layers)[:, None], (L, H))
    mean_s = _nanmean0(s) if N else np.full((L, H), np.nan)
    e_fin = np.where(np.isfinite(e), e, np.nan)
    mean_e = _nanmean0(e_fin) if N else np.full((L, H), np.nan)
    elbow_values = mean_s if elbow_include_excluded else mean_s[keep_layers]
    elbow = _criterion_1(elbow_values, elbow_method, threshold, sample_mask is not None,
                         keep_layers.sum() == 0 and not elbow_include_excluded)
    thr = elbow.threshold
    LH = L * H
    if sample_mask is not None:
        ok = np.asarray(sample_mask, dtype=bool).reshape(N, LH)
        eligible = ok.any(axis=0).reshape(L, H) if N else np.zeros((L, H), dtype=bool)
    else:
        with np.errstate(invalid="ignore"):
            eligible = keep_layers & (mean_s >= thr)
        # per-sample choice: k lowest entropies among eligible heads
        ok = np.broadcast_to(eligible.reshape(1, LH), (N, LH)) & np.isfinite(e.reshape(N, LH))
    if bmask is not None:
        ok = ok & ~bmask.reshape(N, LH)
    choices, freq = _choose_per_sample(s.reshape(N, LH), e.reshape(N, LH), ok, int(k), tie_break)  # [N, LH] views
    freq = freq.reshape(L, H)
    ranked = _ranked(freq, mean_s, mean_e, N)
    heads = ranked[: int(top_k)]
    selected = np.zeros((L, H), dtype=bool)
    for d in heads:
        selected[d["layer"], d["head"]] = True
    settings = {
        "exclude_layers": excluded_list(L, exclude_layers),
        "elbow_method": elbow_method,
        "elbow_include_excluded": bool(elbow_include_excluded),
        "elbow_options": {},  # kneed's own defaults (the knobs are not settings); kept so heads.json keeps its keys
        "k": int(k),
        "top_k": int(top_k),
        "bottom_row_mask": bmask is not None,
        "threshold_given": threshold is not None,
    }
    if sample_mask is not None or tie_break != "s_img":
        settings.update({"per_sample_criterion_1": sample_mask is not None, "tie_break": tie_break})
    return Selection(
        heads=heads,
        ranked=ranked,
        threshold=float(thr),
        elbow=elbow,
        settings=settings,
        n_samples=int(N),
        n_layers=int(L),
        n_heads=int(H),
        frequency=freq.astype(np.int64),
        mean_s_img=mean_s,
        mean_entropy=mean_e,
        eligible=eligible,
        selected=selected,
        per_sample_choices=choices.astype(np.int64),
    )


def select_from_analyses(analyses: Sequence[SampleAnalysis], exclude_axes: Iterable[int], sel: SelectionConfig,
                         top_k: int, threshold: float | None = None) -> Selection:
    """The selection of a run from its samples' analyses (`record_numbers.selection_analysis`), with
    the run's settings: what stage=select writes and the explorer shows.

    Args:
        exclude_axes: excluded layers as indices on the records' L axis.
        sel: `selection.*`: with ``elbow.scope=per_sample`` each analysis' ``eligible`` is its own
            criterion 1; with ``ranking=per_sample`` each sample's own ``top_k`` heads are counted
            (``k = top_k``); the bottom-row flags of the analyses are applied when present.
        threshold: a criterion-1 threshold to use instead of the elbow (e.g. heads.json's).
    """
    per_sample_c1 = sel.elbow.scope == "per_sample"
    bottom = [a.bottom_row_artifact for a in analyses if a.bottom_row_artifact is not None]
    return select_heads(
        np.stack([a.s_img for a in analyses]), np.stack([a.entropy for a in analyses]), sel, top_k,  # (N, L, H) each
        exclude_layers=list(exclude_axes), threshold=threshold,
        bottom_row_mask=np.stack(bottom) if bottom and not per_sample_c1 else None,
        sample_mask=np.stack([a.eligible for a in analyses]) if per_sample_c1 else None)


def _checked_inputs(s_img, entropy, k, top_k, bottom_row_mask, sample_mask, tie_break):
    """`select_heads`' arrays as float64 ``[N, L, H]`` (and the bool bottom-row mask), or a ValueError."""
    s = np.asarray(s_img, dtype=np.float64)
    e = np.asarray(entropy, dtype=np.float64)
    if s.ndim != 3 or e.shape != s.shape:
        raise ValueError(f"s_img and entropy must both be [N, L, H]; got {s.shape} and {e.shape}")
    if k < 1 or top_k < 1:
        raise ValueError("k and top_k must be >= 1")
    bmask = None
    if bottom_row_mask is not None:
        bmask = np.asarray(bottom_row_mask, dtype=bool)
        if bmask.shape != s.shape:
            raise ValueError(f"bottom_row_mask must be [N, L, H] = {s.shape}, got {bmask.shape}")
    if tie_break not in ("s_img", "index"):
        raise ValueError(f"tie_break must be 's_img' or 'index', got {tie_break!r}")
    if sample_mask is not None and np.asarray(sample_mask).shape != s.shape:
        raise ValueError(f"sample_mask must be [N, L, H] = {s.shape}, got {np.asarray(sample_mask).shape}")
    return s, e, bmask


def _criterion_1(elbow_values: np.ndarray, method: ElbowMethod, threshold: float | None, per_sample: bool, none_kept: bool) -> Elbow:
    """Criterion 1's threshold: decided per sample by the caller, the elbow of the mean-S_img curve,
    or the caller's own `threshold`."""
    if per_sample:
        return Elbow(float("nan"), None, method, "per_sample", False, "criterion 1 decided in each sample", 0, 0, 0)
    if threshold is None:
        elbow = elbow_threshold(elbow_values, method)
        if none_kept:
            return Elbow(elbow.threshold, None, method, "keep_all", False, "all layers excluded: no head is eligible", 0, 0, 0)
        return elbow
    thr = float(threshold)
    vals = np.asarray(elbow_values, dtype=np.float64).ravel()
    fin = np.isfinite(vals)
    return Elbow(thr, None, method, "given", False, "threshold given by the caller", int(fin.sum()),
                 int((vals[fin] >= thr).sum()), int((~fin).sum()))


def _choose_per_sample(s_flat: np.ndarray, e_flat: np.ndarray, ok: np.ndarray, k: int,
                       tie_break: str) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's k lowest entropies among its allowed heads (``ok[N, LH]``): the choices ``[N, k]``
    (flat indices, -1 = fewer allowed) and how often each head was chosen ``[LH]``."""
    N, LH = s_flat.shape
    key_e = np.where(ok, e_flat, np.inf)
    if tie_break == "index":
        key_s = np.broadcast_to(np.arange(LH), (N, LH))
    else:
        key_s = np.where(np.isnan(s_flat), np.inf, -s_flat)
    kk = min(int(k), LH)
    if not N:
        return np.zeros((0, kk), dtype=np.int64), np.zeros(LH, dtype=np.int64)
    order = np.lexsort((key_s, key_e, ~ok), axis=-1)[:, :kk]
    valid = np.take_along_axis(ok, order, axis=-1)
    return np.where(valid, order, -1), np.bincount(order[valid], minlength=LH)


def _ranked(freq: np.ndarray, mean_s: np.ndarray, mean_e: np.ndarray, N: int) -> list[dict[str, Any]]:
    """Every head chosen at least once: frequency desc, mean entropy asc, mean S_img desc, then index."""
    H = freq.shape[1]
    f_flat = freq.ravel()
    me = np.where(np.isnan(mean_e), np.inf, mean_e).ravel()
    ms = np.where(np.isnan(mean_s), np.inf, -mean_s).ravel()
    rank_order = np.lexsort((np.arange(f_flat.size), ms, me, -f_flat))
    rank_order = rank_order[f_flat[rank_order] > 0]
    return [{"layer": int(i // H), "head": int(i % H), "frequency": int(f_flat[i]),
             "frequency_ratio": float(f_flat[i]) / N if N else 0.0, "mean_s_img": float(mean_s.ravel()[i]),
             "mean_entropy": float(mean_e.ravel()[i])} for i in rank_order]
