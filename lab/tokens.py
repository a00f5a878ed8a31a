"""Generation-time attention: per generated token, where on the image the model looks.

Records captured with `strategy.query_positions=generated` hold `image_attention[T, L, H, V]`:
row t is the query that produced generated token t (`rec.meta.generated_tokens[t]`). This module
reduces that array (model-agnostic numpy; no model needed) and draws it:

* `reduce_token_maps`: mean over any of heads / layers / steps, on all or chosen layers and heads,
  or on explicit (layer, head) pairs such as the selected localization heads;
* `image_share`: the share of each generated token's attention that lands on image tokens;
* `token_curve` / `token_strip`: PNGs through `lab.plots.token_attention_curve` / `token_overlay_strip`.

Indices passed as `layers` / `heads` / `pairs` are indices on the array's L / H axes; the
`record_*` helpers take model indices and map them through `rec.meta.layers` / `rec.meta.heads`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from utils.errors import UserError

Axis = Literal["steps", "layers", "heads"]
_AXES = {"steps": 0, "layers": 1, "heads": 2}


def _check(att: np.ndarray) -> np.ndarray:
    a = np.asarray(att)
    if a.ndim != 4:
        raise ValueError(f"expected image_attention [T, L, H, V], got shape {a.shape}")
    return a


def _pick(a: np.ndarray, axis: int, idx: Sequence[int] | None, name: str) -> np.ndarray:
    if idx is None:
        return a
    idx = [int(i) for i in idx]
    n = a.shape[axis]
    bad = [i for i in idx if not -n <= i < n]
    if bad or not idx:
        raise ValueError(f"{name}={idx}: need a non-empty list of indices in 0..{n - 1}")
    return np.take(a, idx, axis=axis)


def reduce_token_maps(
    att: np.ndarray,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    over: Iterable[Axis] = ("heads", "layers"),
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    normalize: bool = False,
) -> np.ndarray:
    """Mean of `att[T, L, H, V]` over the axes named in `over`, on the chosen layers / heads.

    layers / heads: indices on the L / H axes (None = all). pairs: explicit (layer, head) pairs
    instead (e.g. the selected heads); they form one axis K that "heads" or "layers" in `over`
    averages. The result keeps the other axes in order, e.g. over=("heads", "layers") -> [T, V],
    over=("heads",) -> [T, L', V], over=("steps", "heads", "layers") -> [V].
    normalize: divide each resulting map by its sum over V (a distribution over the image; an
    all-zero map stays zero).
    """
    a = _check(att).astype(np.float64, copy=False)
    over = tuple(over)
    unknown = [o for o in over if o not in _AXES]
    if unknown:
        raise ValueError(f"over={over}: unknown axis {unknown}; use steps, layers, heads")
    if pairs is not None:
        if layers is not None or heads is not None:
            raise ValueError("give pairs= or layers=/heads=, not both")
        if not len(pairs):
            raise ValueError("pairs= is empty")
        L, H = a.shape[1:3]
        bad = [p for p in pairs if not (0 <= int(p[0]) < L and 0 <= int(p[1]) < H)]
        if bad:
            raise ValueError(f"pairs {bad} outside the array's {L} layers x {H} heads")
        li = np.array([int(p[0]) for p in pairs])
        hi = np.array([int(p[1]) for p in pairs])
        a = a[:, li, hi]  # (T, K, V)
        axes = []
        if "steps" in over:
            axes.append(0)
        if "heads" in over or "layers" in over:
            axes.append(1)
    else:
        a = _pick(a, 1, layers, "layers")
        a = _pick(a, 2, heads, "heads")
        axes = sorted(_AXES[o] for o in set(over))
    out = a.mean(axis=tuple(axes)) if axes else a
    if normalize:
        s = out.sum(-1, keepdims=True)
        out = np.divide(out, s, out=np.zeros_like(out), where=s > 0)
    return out


def image_share(
    att: np.ndarray,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """[T]: for each generated token, the attention mass on image tokens (sum over V), averaged
    over the chosen heads and layers (or pairs). 1 = the query looked only at the image."""
    return reduce_token_maps(att, layers, heads, over=("heads", "layers"), pairs=pairs).sum(-1)


# ---- records: model indices -> axes ------------------------------------------------------------
def _require_generated(rec: Any) -> None:
    if rec.meta.query_mode != "generated":
        raise UserError(f"{rec.path}: captured with query_positions={rec.meta.query_mode}; per-token maps need "
                        "strategy.query_positions=generated")
    if rec.image_attention.shape[0] == 0:
        raise UserError(f"{rec.path}: no generated token was captured")


def _axes(values: Sequence[int] | None, have: Sequence[int], name: str, rec: Any) -> list[int] | None:
    if values is None:
        return None
    pos = {v: i for i, v in enumerate(have)}
    missing = [v for v in values if v not in pos]
    if missing:
        raise UserError(f"{rec.path}: {name} {missing} not captured in this record (captured: {list(have)})")
    return [pos[v] for v in values]


def record_token_maps(rec: Any, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                      over: Iterable[Axis] = ("heads", "layers"), *,
                      pairs: Sequence[tuple[int, int]] | None = None, normalize: bool = False) -> np.ndarray:
    """`reduce_token_maps` of a record captured with query_positions=generated, in model indices."""
    _require_generated(rec)
    m = rec.meta
    if pairs is not None:
        li = _axes([p[0] for p in pairs], m.layers, "layers", rec)
        hi = _axes([p[1] for p in pairs], m.heads, "heads", rec)
        return reduce_token_maps(rec.image_attention, over=over, pairs=list(zip(li, hi)), normalize=normalize)
    return reduce_token_maps(rec.image_attention, _axes(layers, m.layers, "layers", rec),
                             _axes(heads, m.heads, "heads", rec), over=over, normalize=normalize)


def record_image_share(rec: Any, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None, *,
                       pairs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    return record_token_maps(rec, layers, heads, pairs=pairs).sum(-1)


def token_labels(rec: Any) -> list[str]:
    """One label per captured row: the generated token (falls back to t0, t1, ... if missing)."""
    toks = list(rec.meta.generated_tokens)
    T = rec.image_attention.shape[0]
    return [toks[t] if t < len(toks) else f"t{t}" for t in range(T)]


# ---- figures ----------------------------------------------------------------------------------
def token_curve(rec: Any, out_path: str | Path, layers: Sequence[int] | None = None,
                heads: Sequence[int] | None = None, *, pairs: Sequence[tuple[int, int]] | None = None,
                title: str | None = None, **kw) -> Path:
    """PNG: share of attention on the image per generated token."""
    from lab import plots

    shares = record_image_share(rec, layers, heads, pairs=pairs)
    what = "selected heads" if pairs is not None else "mean over " + (
        "all heads" if layers is None and heads is None else f"layers {layers or 'all'}, heads {heads or 'all'}")
    return plots.token_attention_curve(token_labels(rec), shares, out_path,
                                       title=title or f"attention on image per generated token ({what})", **kw)


def token_strip(rec: Any, image: Any, out_path: str | Path, layers: Sequence[int] | None = None,
                heads: Sequence[int] | None = None, *, pairs: Sequence[tuple[int, int]] | None = None,
                max_tokens: int = 12, title: str | None = None, **kw) -> Path:
    """PNG: one overlay per generated token of its (head/layer-averaged) image attention."""
    from lab import plots

    maps = record_token_maps(rec, layers, heads, pairs=pairs)  # (T, V)
    return plots.token_overlay_strip(image, rec.layout, maps, token_labels(rec), out_path, max_tokens=max_tokens,
                                     title=title or f"{rec.meta.query}  ->  {rec.meta.generated_text}", **kw)
