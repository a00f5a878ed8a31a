"""Reading the named visual heads back from a run folder's visual_heads.json (stage=ablate)."""

from __future__ import annotations

import json
from pathlib import Path

from utils.errors import UserError
from utils.files import read_text_regular


def named_visual_heads(run_dir: Path, model_shape: tuple[int, int]) -> tuple[list[tuple[int, int]], str]:
    """The heads of visual_heads.json's "named" list (model indices) and the file they came from.

    Args:
        run_dir: the run folder (stage=select wrote visual_heads.json there).
        model_shape: (layers, heads) of the model the heads will be masked in.

    Raises:
        UserError: no file, a file without a "named" list (written before the rule existed), no head
            named, or a head the model does not have.
    """
    path = Path(run_dir) / "visual_heads.json"
    if not path.is_file():
        raise UserError(f"ablation.visual_heads=true: no {path}; run stage=select (or stage=batch) into this folder first")
    try:
        named = json.loads(read_text_regular(path)).get("named")
    except (ValueError, AttributeError) as e:
        raise UserError(f"{path}: not a visual_heads.json ({e})") from None
    if not isinstance(named, dict) or not isinstance(named.get("heads"), list):
        raise UserError(f"{path} has no \"named\" list (an older run): run stage=select again to name the visual heads")
    heads = [(h.get("layer"), h.get("head")) for h in named["heads"] if isinstance(h, dict)]
    L, H = model_shape
    bad = [h for h in heads if not all(isinstance(x, int) and not isinstance(x, bool) for x in h)
           or not (0 <= h[0] < L and 0 <= h[1] < H)]
    if bad or len(heads) != len(named["heads"]):
        raise UserError(f"{path}: heads {bad[:5]} are not (layer, head) integers of the model's {L} x {H}")
    if not heads:
        raise UserError(f"{path}: no visual head was named (visual_heads.min_ratio / min_share); nothing to mask")
    print(f"visual heads masked: {len(heads)} from {path}")
    return [(int(l), int(h)) for l, h in heads], str(path)
