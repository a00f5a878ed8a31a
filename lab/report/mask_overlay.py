"""The explorer's mask overlays: stage=evaluate's `masks/selected_heads/<stem>.png` (predicted) and
`masks/ground_truth/<stem>.png`, as translucent RGBA PNG data URLs at thumbnail size (green:
predicted, red: ground truth), drawn by the page over the image like the thumbnail itself."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from lab.report.encode import b64
from utils.data import file_stem

OVERLAYS = (("gt_mask", "ground_truth", (255, 40, 40, 110)), ("pred_mask", "selected_heads", (0, 224, 0, 110)))


def mask_overlays(run_dir: Path, sample_id: str, image_size: tuple[int, int], max_side: int) -> dict[str, Any]:
    """{"gt_mask": data URL, "pred_mask": data URL} for the masks stage=evaluate wrote (either may be
    absent); a mask PNG of another size than the record's image, or unreadable, is left out."""
    from PIL import Image

    out: dict[str, Any] = {}
    for key, folder, rgba in OVERLAYS:
        p = Path(run_dir) / "masks" / folder / f"{file_stem(sample_id)}.png"
        if not p.is_file():
            continue
        try:
            with Image.open(p) as im:
                if tuple(im.size) != tuple(image_size):
                    continue
                s = min(1.0, max_side / max(im.size))
                small = im.convert("L").resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.NEAREST)
        except (OSError, ValueError, SyntaxError):
            continue
        on = np.asarray(small) > 127  # [h, w]
        px = np.zeros((*on.shape, 4), dtype=np.uint8)  # [h, w, RGBA]
        px[on] = rgba
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="PNG", optimize=True)
        out[key] = f"data:image/png;base64,{b64(buf.getvalue())}"
    return out
