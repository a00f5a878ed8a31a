"""Layer x head grid of the named visual heads by kind (lab/analysis/visual_heads.py)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from lab.figures.base import PathLike, _new_figure, _save
from lab.figures.charts import _ticks

KIND_COLOURS = {"localization": "#d62728", "global": "#1f77b4", "focused": "#ff7f0e"}  # not named: light grey


def head_kinds_grid(heads: Sequence[dict[str, Any]], layers: Sequence[int], head_axis: Sequence[int],
                    out_path: PathLike, *, dpi: float = 100, show: bool = False) -> Any:
    """One cell per captured (layer, head), coloured by its visual-head kind.

    Args:
        heads: the named visual heads (`name_visual_heads` items with model indices and "kind").
        layers: the model layer of each row (the record's L axis).
        head_axis: the model head of each column (the record's H axis).
        out_path: the PNG written.
    """
    kinds = list(KIND_COLOURS)
    row, col = {int(l): i for i, l in enumerate(layers)}, {int(h): j for j, h in enumerate(head_axis)}
    grid = np.zeros((len(layers), len(head_axis)), dtype=np.int64)  # [L, H]; 0 = not a visual head
    for h in heads:
        if int(h["layer"]) in row and int(h["head"]) in col:
            grid[row[int(h["layer"])], col[int(h["head"])]] = 1 + kinds.index(h["kind"])
    L, H = grid.shape
    fig = _new_figure((min(max(0.26 * H + 2.4, 4.5), 20.0), min(max(0.2 * L + 1.6, 3.5), 16.0)), dpi, show)
    ax = fig.subplots()
    cmap = ListedColormap(["0.92"] + [KIND_COLOURS[k] for k in kinds])
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=len(kinds), aspect="auto", interpolation="nearest", origin="upper")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(_ticks(H), [str(head_axis[j]) for j in _ticks(H)])
    ax.set_yticks(_ticks(L), [str(layers[i]) for i in _ticks(L)])
    ax.tick_params(labelsize=7)
    counts = {k: sum(h["kind"] == k for h in heads) for k in kinds}
    ax.legend(handles=[Patch(color=KIND_COLOURS[k], label=f"{k} ({counts[k]})") for k in kinds],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_title(f"visual heads by kind: {len(heads)} of {L * H} heads", fontsize=10)
    return _save(fig, out_path, dpi, show)
