"""Scene generator for the toy world: 2-4 coloured shapes on a plain background.

Every scene is a deterministic function of a seed. Images are NON-SQUARE (96x64, 64x96, 96x80,
80x96), so the LLaVA-1.5 pad-to-square geometry is exercised. Each object has a tight pixel box
`[x, y, w, h]` computed from the pixels actually drawn. Within a scene all colours are distinct and
all shapes are distinct, so "the red one" and "the triangle" each refer to exactly one object.
Each row also carries the target's exact drawn pixels as `mask` (COCO RLE, `render_scene`'s mask).

Questions (single-word answers):
  shape_of_color: "what shape is the red one?"  -> "circle"
  color_of_shape: "what color is the triangle?" -> "red"

Regenerate the held-out grounding set:
    python -m llava.toy.scenes --out examples/toy --n 240 --seed 1234
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from llava.shapes import draw_shape
from utils.masks import encode_mask

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 20),
    "purple": (150, 40, 190),
}
SHAPES = ["circle", "square", "triangle", "cross"]
SIZES = [(96, 64), (64, 96), (96, 80), (80, 96)]  # (width, height), all non-square
GROUPS = ["shape_of_color", "color_of_shape"]  # question types the generator can write
# The shipped checkpoint and grounding set use shape_of_color only: querying by colour (a per-patch
# feature) gives crisp last-token localization heads; querying by shape did not (docs/toy.md).
DEFAULT_GROUPS = ["shape_of_color"]
MIN_OBJ, MAX_OBJ = 20, 28  # object size range in original pixels
WORDS = ["what", "shape", "color", "is", "the", "one", *COLORS, *SHAPES]


@dataclass
class ToyObject:
    shape: str
    color: str
    bbox: list[int]  # [x, y, w, h], tight around the drawn pixels


@dataclass
class Scene:
    width: int
    height: int
    background: tuple[int, int, int]
    objects: list[ToyObject] = field(default_factory=list)
    seed: int = 0

    def render(self) -> Image.Image:
        return render_scene(self)[0]


def _tight_box(mask: Image.Image) -> list[int]:
    x0, y0, x1, y1 = mask.getbbox()
    return [x0, y0, x1 - x0, y1 - y0]


def make_scene(seed: int, n_objects: int | None = None) -> Scene:
    """A random scene, deterministic in `seed`."""
    rng = random.Random(seed)
    width, height = rng.choice(SIZES)
    n = n_objects or rng.randint(2, 4)
    g = rng.randint(200, 250)
    background = (g + rng.randint(-5, 5), g + rng.randint(-5, 5), g + rng.randint(-5, 5))
    colors = rng.sample(list(COLORS), n)
    shapes = rng.sample(SHAPES, n)
    placed: list[tuple[int, int, int]] = []  # (x, y, size)
    for _ in range(n):
        for _attempt in range(200):
            s = rng.randint(MIN_OBJ, MAX_OBJ)
            x, y = rng.randint(1, width - s - 1), rng.randint(1, height - s - 1)
            if all(x + s + 2 <= px or px + ps + 2 <= x or y + s + 2 <= py or py + ps + 2 <= y
                   for px, py, ps in placed):
                placed.append((x, y, s))
                break
        else:  # no room: fewer objects
            break
    scene = Scene(width, height, background, seed=seed)
    for (x, y, s), color, shape in zip(placed, colors, shapes):
        mask = Image.new("L", (width, height), 0)
        draw_shape(ImageDraw.Draw(mask), shape, x, y, s, 255)
        scene.objects.append(ToyObject(shape, color, _tight_box(mask)))
        scene.objects[-1]._xys = (x, y, s)  # drawing square, used by render_scene
    return scene


def render_scene(scene: Scene) -> tuple[Image.Image, list[Image.Image]]:
    """Return the RGB image and one binary mask per object."""
    img = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(img)
    masks = []
    for obj in scene.objects:
        x, y, s = obj._xys
        draw_shape(draw, obj.shape, x, y, s, COLORS[obj.color])
        mask = Image.new("L", (scene.width, scene.height), 0)
        draw_shape(ImageDraw.Draw(mask), obj.shape, x, y, s, 255)
        masks.append(mask)
    return img, masks


def target_mask(mask: Image.Image) -> dict:
    """COCO RLE (utils/masks.py) of an object's exact drawn pixels: the row's ground-truth `mask`."""
    return encode_mask(np.asarray(mask) > 0)


def question(group: str, obj: ToyObject) -> tuple[str, str]:
    """(question text, single-word answer) about `obj`."""
    if group == "shape_of_color":
        return f"what shape is the {obj.color} one?", obj.shape
    if group == "color_of_shape":
        return f"what color is the {obj.shape}?", obj.color
    raise ValueError(group)


def sample_item(seed: int, groups: list[str] | None = None) -> dict:
    """One (scene, target object, question, answer) sample, deterministic in `seed`."""
    scene = make_scene(seed)
    rng = random.Random(seed * 7919 + 17)
    group = rng.choice(groups or DEFAULT_GROUPS)
    target = rng.randrange(len(scene.objects))
    obj = scene.objects[target]
    prompt, answer = question(group, obj)
    return dict(scene=scene, target=target, group=group, prompt=prompt, answer=answer, bbox=obj.bbox)


def write_grounding_set(out: str | Path, n: int = 240, seed: int = 1234, n_small: int = 16,
                        groups: list[str] | None = None) -> Path:
    """Write `toy_grounding.jsonl` (+ `toy_small.jsonl`) and PNGs under `out/images/`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        item = sample_item(seed * 100_003 + i, groups)
        rel = f"images/toy_{i:04d}.png"
        image, masks = render_scene(item["scene"])
        image.save(out / rel, optimize=True)
        rows.append(dict(id=f"toy_{i:04d}", prompt=item["prompt"], image_path=rel, bbox=item["bbox"],
                         answer=item["answer"], group=item["group"], mask=target_mask(masks[item["target"]])))
    with open(out / "toy_grounding.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(out / "toy_small.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:n_small])
    return out / "toy_grounding.jsonl"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="examples/toy")
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-small", type=int, default=16)
    ap.add_argument("--groups", nargs="*", default=DEFAULT_GROUPS, help=f"subset of {GROUPS}")
    args = ap.parse_args(argv)
    path = write_grounding_set(args.out, args.n, args.seed, args.n_small, args.groups)
    print(f"wrote {args.n} rows to {path}")


if __name__ == "__main__":
    main()
