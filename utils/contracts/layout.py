"""ImageLayout: where an image's tokens sit in the prompt and which pixels each grid cell covers.

`llava/` builds a layout for every image it feeds the model; `lab/` reads it back from records
to turn per-token attention into 2D maps, boxes and overlays on the *original* image. It is
plain data (JSON round-trip) plus geometry, so it may be imported by both sides.

Geometry model: each grid spans an axis-aligned rectangle `box = (x0, y0, x1, y1)` in
original-image pixel coordinates. Cells split it evenly. The rectangle may extend beyond the
image (pad-to-square puts the image inside a larger square) or cover part of it (centre crop);
cell boxes are clipped to the image when they are mapped back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Grid:
    """One 2D grid of image tokens (row-major), e.g. LLaVA-1.5's 24x24 patch grid.

    token_index[r * cols + c] is the index into the record's image-token axis V of cell (r, c),
    or -1 when the cell has no token (never for LLaVA-1.5).
    """

    name: str
    rows: int
    cols: int
    token_index: tuple[int, ...]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original-image pixels

    def __post_init__(self) -> None:
        if len(self.token_index) != self.rows * self.cols:
            raise ValueError(
                f"grid {self.name!r}: {len(self.token_index)} token indices for {self.rows}x{self.cols} cells"
            )

    @property
    def cell_size(self) -> tuple[float, float]:
        """(width, height) of one cell in original-image pixels."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) / self.cols, (y1 - y0) / self.rows


@dataclass(frozen=True)
class ImageLayout:
    """Token positions and geometry of one image in one prompt.

    token_positions: sequence positions (in the sample's own, unpadded `input_ids`) of the V
    image-placeholder tokens, in order; the record's image axis V follows this order.
    separator_index: indices into V of tokens that belong to no grid cell (e.g. LLaVA-NeXT's
    `image_newline`).
    """

    image_size: tuple[int, int]  # original (width, height)
    token_positions: tuple[int, ...]
    grids: tuple[Grid, ...]
    aspect: str  # how the processor fitted the image: crop | pad | resize | anyres
    separator_index: tuple[int, ...] = ()
    default_grid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.grids:
            raise ValueError("an ImageLayout needs at least one grid")
        v = len(self.token_positions)
        for g in self.grids:
            bad = [i for i in g.token_index if i >= v]
            if bad:
                raise ValueError(f"grid {g.name!r} points at token {bad[0]} but the image has {v} tokens")

    # ---- access -------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.token_positions)

    def grid(self, name: str | None = None) -> Grid:
        """The named grid; default: `default_grid`, else the last one (the finest for anyres)."""
        name = name or self.default_grid
        if not name:
            return self.grids[-1]
        for g in self.grids:
            if g.name == name:
                return g
        raise KeyError(f"no grid {name!r} in this layout; grids: {[g.name for g in self.grids]}")

    # ---- maps ---------------------------------------------------------------------------
    def to_grid(self, values: np.ndarray, grid: str | None = None) -> np.ndarray:
        """Reshape per-token values `[..., V]` to `[..., rows, cols]` (cells without a token: 0)."""
        g = self.grid(grid)
        values = np.asarray(values)
        if values.shape[-1] != self.num_tokens:
            raise ValueError(f"values have {values.shape[-1]} image tokens, layout has {self.num_tokens}")
        idx = np.asarray(g.token_index)
        out = np.take(values, np.where(idx < 0, 0, idx), axis=-1)  # (..., rows*cols)
        if (idx < 0).any():
            out = np.where(idx < 0, 0, out)
        return out.reshape(*values.shape[:-1], g.rows, g.cols)

    # ---- geometry -----------------------------------------------------------------------
    def cell_box(self, r: int, c: int, grid: str | None = None, clip: bool = True) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of cell (r, c) in original-image pixels, clipped to the image."""
        return self.cells_box(r, c, r + 1, c + 1, grid, clip)

    def cells_box(self, r0: int, c0: int, r1: int, c1: int, grid: str | None = None, clip: bool = True) -> tuple[float, float, float, float]:
        """Pixel rectangle spanned by cells rows [r0, r1) x cols [c0, c1) (exclusive ends)."""
        g = self.grid(grid)
        gx0, gy0, _, _ = g.box
        cw, ch = g.cell_size
        x0, y0, x1, y1 = gx0 + c0 * cw, gy0 + r0 * ch, gx0 + c1 * cw, gy0 + r1 * ch
        if clip:
            w, h = self.image_size
            x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
            y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
        return x0, y0, x1, y1

    def cell_center(self, r: float, c: float, grid: str | None = None) -> tuple[float, float]:
        """Pixel (x, y) of the centre of cell (r, c) (not clipped)."""
        g = self.grid(grid)
        cw, ch = g.cell_size
        return g.box[0] + (c + 0.5) * cw, g.box[1] + (r + 0.5) * ch

    def pixel_to_cell(self, x: float, y: float, grid: str | None = None) -> tuple[int, int] | None:
        """The cell (r, c) containing original pixel (x, y), or None if the grid does not cover it."""
        g = self.grid(grid)
        cw, ch = g.cell_size
        c = int(np.floor((x - g.box[0]) / cw))
        r = int(np.floor((y - g.box[1]) / ch))
        if 0 <= r < g.rows and 0 <= c < g.cols:
            return r, c
        return None

    def to_image(self, grid_map: np.ndarray, grid: str | None = None, order: int = 1) -> np.ndarray:
        """Resample a `[rows, cols]` map onto the original image: `[H, W]`, 0 where the grid does not reach.

        order=0 gives blocky cells (exact cell membership), order=1 bilinear between cell centres.
        """
        from scipy import ndimage

        g = self.grid(grid)
        grid_map = np.asarray(grid_map, dtype=np.float64)
        if grid_map.shape != (g.rows, g.cols):
            raise ValueError(f"map of shape {grid_map.shape} for a {g.rows}x{g.cols} grid")
        w, h = self.image_size
        cw, ch = g.cell_size
        xs = np.arange(w) + 0.5
        ys = np.arange(h) + 0.5
        # continuous cell coordinates of every pixel centre; cell centres sit at k + 0.5
        cc = (xs - g.box[0]) / cw - 0.5
        rr = (ys - g.box[1]) / ch - 0.5
        R, C = np.meshgrid(rr, cc, indexing="ij")
        if order == 0:
            coords = np.stack([np.floor(R + 0.5), np.floor(C + 0.5)])
        else:
            coords = np.stack([R, C])
        out = ndimage.map_coordinates(grid_map, coords, order=order, mode="nearest")
        inside = (R > -0.5) & (R < g.rows - 0.5) & (C > -0.5) & (C < g.cols - 0.5)
        return np.where(inside, out, 0.0)

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = LAYOUT_VERSION
        return json.loads(json.dumps(d))  # plain lists/dicts: equal to what a record file gives back

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageLayout":
        d = dict(d)
        d.pop("version", None)
        grids = tuple(
            Grid(
                name=g["name"],
                rows=int(g["rows"]),
                cols=int(g["cols"]),
                token_index=tuple(int(i) for i in g["token_index"]),
                box=tuple(float(x) for x in g["box"]),  # type: ignore[arg-type]
            )
            for g in d.pop("grids")
        )
        return cls(
            image_size=tuple(int(x) for x in d.pop("image_size")),  # type: ignore[arg-type]
            token_positions=tuple(int(p) for p in d.pop("token_positions")),
            grids=grids,
            aspect=str(d.pop("aspect")),
            separator_index=tuple(int(i) for i in d.pop("separator_index", ())),
            default_grid=str(d.pop("default_grid", "")),
            extra=dict(d.pop("extra", {}) or {}),
        )


def square_grid_layout(
    image_size: tuple[int, int],
    token_positions: Sequence[int],
    side: int,
    box: tuple[float, float, float, float],
    aspect: str,
    name: str = "image",
) -> ImageLayout:
    """The LLaVA-1.5 case: one side x side row-major grid covering `box`."""
    if len(token_positions) != side * side:
        raise ValueError(f"{len(token_positions)} image tokens do not form a {side}x{side} grid")
    grid = Grid(name=name, rows=side, cols=side, token_index=tuple(range(side * side)), box=tuple(float(x) for x in box))  # type: ignore[arg-type]
    return ImageLayout(
        image_size=(int(image_size[0]), int(image_size[1])),
        token_positions=tuple(int(p) for p in token_positions),
        grids=(grid,),
        aspect=aspect,
        default_grid=name,
    )
