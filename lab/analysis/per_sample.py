"""Per-sample analysis: both criteria for every head of one sample's image attention."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from lab.criteria.entropy import DEFAULT_RTOL, bottom_row_share, entropy_components
from lab.criteria.image_sum import excluded_list, image_attention_sum, layer_mask
from lab.criteria.variants import bottom_row_any_cell
from utils.settings.declarations import SelectionConfig
from utils.io import jsonable
from utils.contracts.layout import ImageLayout


def _to_maps(image_attention: np.ndarray, layout_or_grid_shape: ImageLayout | Sequence[int], grid: str | None) -> np.ndarray:
    if isinstance(layout_or_grid_shape, ImageLayout):
        return layout_or_grid_shape.to_grid(image_attention, grid)
    shape = tuple(int(x) for x in layout_or_grid_shape)
    if len(shape) != 2:
        raise ValueError(f"grid shape must be (rows, cols), got {layout_or_grid_shape!r}")
    rows, cols = shape
    V = image_attention.shape[-1]
    if rows * cols != V:
        raise ValueError(f"{V} image tokens do not form a {rows}x{cols} grid")
    return image_attention.reshape(*image_attention.shape[:-1], rows, cols)


@dataclass
class SampleAnalysis:
    """Per-head statistics of one sample (arrays are ``[L, H]``).

    s_img: criterion 1 (attention mass on the image). entropy: criterion 2 (spatial entropy;
    ``inf`` = no above-mean cell). n_components: connected components of the above-mean map.
    bottom_row_share: fraction of above-mean mass on the grid's last row (``nan`` if none).
    included: False for heads of excluded layers.
    passes_c1: ``s_img >= threshold`` (None when no threshold was given).
    bottom_row_artifact: ``bottom_row_share > bottom_row_fraction`` (None when the filter is off).
    passes_c2: the head has a spatial entropy to rank by (finite) and is not a bottom-row artifact.
    eligible: included & passes_c2 & (passes_c1 when a threshold was given), or the `min_keep`
    fallback's heads when fewer pass.
    tie_break: how `ranked_heads` orders equal entropies ("s_img": higher S_img first; "index":
    layer, head order).
    """

    s_img: np.ndarray
    entropy: np.ndarray
    n_components: np.ndarray
    bottom_row_share: np.ndarray
    included: np.ndarray
    passes_c1: np.ndarray | None
    bottom_row_artifact: np.ndarray | None
    passes_c2: np.ndarray
    eligible: np.ndarray
    grid_shape: tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)
    tie_break: str = "s_img"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.s_img.shape)  # type: ignore[return-value]

    def ranked_heads(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Eligible heads by spatial entropy ascending (ties: higher S_img first, or with
        ``tie_break="index"`` layer, head order)."""
        L, H = self.shape
        idx = np.flatnonzero(self.eligible.ravel())
        second = idx if self.tie_break == "index" else -self.s_img.ravel()[idx]
        order = np.lexsort((second, self.entropy.ravel()[idx]))
        out = [(int(i // H), int(i % H)) for i in idx[order]]
        return out if limit is None else out[:limit]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict of nested lists ``[L][H]``; non-finite floats (inf/nan entropy,
        nan bottom_row_share) become ``null``."""
        return jsonable(
            {
                "n_layers": self.shape[0],
                "n_heads": self.shape[1],
                "grid_shape": list(self.grid_shape),
                "settings": self.settings,
                "entropy_null_means": "no above-mean component (inf) or non-finite input (nan)",
                "s_img": self.s_img,
                "entropy": self.entropy,
                "n_components": self.n_components,
                "bottom_row_share": self.bottom_row_share,
                "included": self.included,
                "passes_c1": self.passes_c1,
                "bottom_row_artifact": self.bottom_row_artifact,
                "passes_c2": self.passes_c2,
                "eligible": self.eligible,
            }
        )

    def summary(self, top: int = 5) -> str:
        L, H = self.shape
        lines = [
            f"{L} layers x {H} heads, grid {self.grid_shape[0]}x{self.grid_shape[1]}",
            f"excluded layers: {self.settings.get('excluded_layers', [])}",
            f"S_img: min {np.nanmin(self.s_img):.4g}, mean {np.nanmean(self.s_img):.4g}, max {np.nanmax(self.s_img):.4g}",
        ]
        if self.passes_c1 is not None:
            lines.append(
                f"criterion 1 (S_img >= {self.settings.get('threshold'):.4g}): "
                f"{int((self.passes_c1 & self.included).sum())} of {int(self.included.sum())} included heads"
            )
        if self.bottom_row_artifact is not None:
            lines.append(f"bottom-row artifacts: {int((self.bottom_row_artifact & self.included).sum())} included heads")
        lines.append(f"no above-mean component (entropy inf): {int(np.isinf(self.entropy).sum())} heads")
        lines.append(f"eligible: {int(self.eligible.sum())} heads")
        best = self.ranked_heads(top)
        if best:
            parts = [
                f"L{l}H{h} (H={self.entropy[l, h]:.3f}, S_img={self.s_img[l, h]:.3f}, comps={int(self.n_components[l, h])})"
                for l, h in best
            ]
            lines.append("lowest spatial entropy: " + ", ".join(parts))
        return "\n".join(lines)


def analyze_sample(
    image_attention: np.ndarray,
    layout_or_grid_shape: ImageLayout | Sequence[int],
    threshold: float | None = None,
    exclude_layers: Iterable[int] = (0, 1),
    *,
    settings: SelectionConfig = SelectionConfig(),
    rtol: float = DEFAULT_RTOL,
    chunk_maps: int = 4096,
) -> SampleAnalysis:
    """Both criteria for every head of one sample's ``image_attention[L, H, V]``.

    Args:
        layout_or_grid_shape: the sample's `ImageLayout` (``settings.grid`` picks one of its grids)
            or a ``(rows, cols)`` shape with ``rows * cols == V`` (row-major tokens).
        threshold: criterion-1 threshold (usually ``Selection.threshold`` from a previous
            selection, or the sample's own elbow); None = criterion 1 not applied here (it is an
            across-sample statistic, see `select_heads`), and no `min_keep` fallback.
        exclude_layers: indices on the L axis left out (the paper: the first two of LLaVA's 32,
            whose attention is spread almost uniformly over the image).
        settings: the criteria's settings (`selection.*`): ``component_weight``, ``connectivity``,
            the bottom-row rule (``bottom_row_filter``: a head fails in this sample if more than
            ``bottom_row_fraction`` of its above-mean mass lies in the grid's last row, or with
            ``bottom_row_rule="any_cell"`` when a last-row cell's attention exceeds
            ``bottom_row_cell``; ``bottom_row_share`` is always computed), the variants
            ``mean_factor`` / ``binarize_threshold`` / ``component_weight="relu_mass"``
            (docs/fidelity.md; `lab.criteria.entropy.entropy_components`), ``min_keep`` (when
            fewer heads are eligible, the ``min_keep`` heads of highest S_img that are not flagged
            bottom-row artifacts become the eligible ones: the release's fallback) and
            ``tie_break`` (how `ranked_heads` orders equal entropies).
    """
    a = np.asarray(image_attention)
    if a.ndim != 3:
        raise ValueError(f"image_attention must be [L, H, V], got shape {a.shape}")
    L, H, _ = a.shape
    st = settings
    maps = _to_maps(a, layout_or_grid_shape, st.grid)  # (L, H, rows, cols)
    R, C = maps.shape[-2:]
    s_img = image_attention_sum(a)
    flat = maps.reshape(L * H, R, C)
    variant = st.component_weight == "relu_mass" or st.mean_factor != 1.0 or st.binarize_threshold != 0.0
    ent, nc, bottom = entropy_components(
        flat, component_weight=st.component_weight, connectivity=int(st.connectivity), mean_factor=float(st.mean_factor),
        binarize_threshold=float(st.binarize_threshold) if variant else None, rtol=rtol, chunk_maps=chunk_maps,
        want_bottom=not variant)
    if bottom is None:  # the bottom-row share always uses the paper's cell rule
        bottom = bottom_row_share(flat, rtol=rtol)
    ent, nc, bottom = ent.reshape(L, H), nc.reshape(L, H), bottom.reshape(L, H)
    included = np.broadcast_to(layer_mask(L, exclude_layers)[:, None], (L, H)).copy()
    passes_c1 = None if threshold is None else (s_img >= float(threshold))
    artifact = None
    if st.bottom_row_filter:
        artifact = (bottom_row_any_cell(maps, st.bottom_row_cell) if st.bottom_row_rule == "any_cell"
                    else bottom > float(st.bottom_row_fraction))
    passes_c2 = np.isfinite(ent)
    if artifact is not None:
        passes_c2 &= ~artifact
    eligible = included & passes_c2
    if passes_c1 is not None:
        eligible &= passes_c1
    min_keep = int(st.min_keep) if threshold is not None else 0
    if min_keep > 0 and int(eligible.sum()) < min_keep:
        eligible = _fallback(s_img, artifact, passes_c1, min_keep)
    return SampleAnalysis(
        s_img=s_img, entropy=ent, n_components=nc, bottom_row_share=bottom, included=included, passes_c1=passes_c1,
        bottom_row_artifact=artifact, passes_c2=passes_c2, eligible=eligible, grid_shape=(int(R), int(C)),
        settings=_settings_record(st, L, exclude_layers, threshold, rtol, variant, min_keep), tie_break=st.tie_break)


def _settings_record(st: SelectionConfig, L: int, exclude_layers: Iterable[int], threshold: float | None, rtol: float,
                     variant: bool, min_keep: int) -> dict[str, Any]:
    """What an analysis file says about how it was computed (the variants' keys only when one is on)."""
    out = {
        "threshold": None if threshold is None else float(threshold),
        "excluded_layers": excluded_list(L, exclude_layers),
        "component_weight": st.component_weight,
        "connectivity": int(st.connectivity),
        "bottom_row_filter": bool(st.bottom_row_filter),
        "bottom_row_fraction": float(st.bottom_row_fraction),
        "rtol": float(rtol),
    }
    if variant or st.bottom_row_rule != "share" or st.tie_break != "s_img" or min_keep:
        out.update({"mean_factor": float(st.mean_factor), "binarize_threshold": float(st.binarize_threshold),
                    "bottom_row_rule": st.bottom_row_rule, "bottom_row_cell": float(st.bottom_row_cell),
                    "tie_break": st.tie_break, "min_keep": int(min_keep)})
    return out


def _fallback(s_img: np.ndarray, artifact: np.ndarray | None, passes_c1: np.ndarray | None, n: int) -> np.ndarray:
    """[L, H] bool: the n heads of highest S_img (ties: layer, head order) not flagged as bottom-row
    artifacts; a flag only counts for heads that pass criterion 1 (the release computes it only there)."""
    flagged = np.zeros(s_img.shape, dtype=bool) if artifact is None else artifact.copy()
    if passes_c1 is not None:
        flagged &= passes_c1
    order = np.argsort(-s_img.ravel(), kind="stable")
    pick = [i for i in order if not flagged.ravel()[i] and np.isfinite(s_img.ravel()[i])][:n]
    out = np.zeros(s_img.size, dtype=bool)
    out[pick] = True
    return out.reshape(s_img.shape)
