"""Seeded grounding scenes for the planted model: flat-coloured shapes on a tinted, shaded background.

Every scene is a deterministic function of `(seed, index)`. Images have realistic, mostly
non-square sizes (640x480, 480x640, 800x600, 1024x768, ...); each holds 3-6 objects of varied size
and position. The question names the target by colour and shape ("is the red circle on the left or
the right?") and its answer is the side of the image the target's box centre lies on. A row's
`group` is the scene's distractor class:

* ``plain``: no other object shares the target's colour or shape;
* ``same_shape``: another object has the target's shape (another colour);
* ``same_color``: another object has the target's colour (another shape);
* ``both``: one distractor of each kind.

Colours are the six the planted projector detects (llava/planted/weights.py); every other object
takes a colour and shape the target does not have, unless it is a distractor.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from llava.shapes import draw_shape

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (140, 45, 175),
    "cyan": (30, 185, 200),
}
SHAPES = ["circle", "square", "triangle", "diamond"]
SIZES = [(640, 480), (480, 640), (800, 600), (600, 800), (1024, 768), (512, 384), (640, 640), (720, 480)]
SIZE_WEIGHTS = [4, 2, 2, 1, 1, 1, 1, 1]  # mostly landscape 4:3, a few square
GROUPS = ["plain", "same_shape", "same_color", "both"]
GROUP_WEIGHTS = [0.35, 0.25, 0.2, 0.2]
WORDS = ["is", "the", "on", "left", "or", "right", *COLORS, *SHAPES]
MIN_SIDE_FRAC = 0.2  # object side as a fraction of the image's short side
MAX_SIDE_FRAC = 0.5
CENTRE_MARGIN = 0.08  # the target's centre is at least this fraction of W away from the middle


@dataclass
class SceneObject:
    shape: str
    color: str
    square: tuple[int, int, int]  # (x, y, side) of the drawing square
    bbox: list[int] = field(default_factory=list)  # [x, y, w, h] tight around the drawn pixels


@dataclass
class PlantedScene:
    width: int
    height: int
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom colours of the shading
    objects: list[SceneObject]
    target: int
    group: str

    @property
    def target_object(self) -> SceneObject:
        return self.objects[self.target]


def _place(rng: random.Random, width: int, height: int, n: int, placed: list[tuple[int, int, int]]) -> None:
    """Append up to `n` non-overlapping squares (x, y, side) to `placed` (a gap of 1/40 of the short side)."""
    short = min(width, height)
    gap = short // 40
    for _ in range(n):
        for _attempt in range(300):
            s = rng.randint(int(MIN_SIDE_FRAC * short), int(MAX_SIDE_FRAC * short))
            x, y = rng.randint(gap, width - s - gap), rng.randint(gap, height - s - gap)
            if all(x + s + gap <= px or px + ps + gap <= x or y + s + gap <= py or py + ps + gap <= y
                   for px, py, ps in placed):
                placed.append((x, y, s))
                break


def _attributes(rng: random.Random, group: str, n: int) -> list[tuple[str, str]]:
    """(colour, shape) of n objects; object 0 is the target, distractors follow, then unrelated objects."""
    colour, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    other_c = [c for c in COLORS if c != colour]
    other_s = [s for s in SHAPES if s != shape]
    out = [(colour, shape)]
    if group in ("same_shape", "both"):
        out.append((rng.choice(other_c), shape))
    if group in ("same_color", "both"):
        out.append((colour, rng.choice(other_s)))
    used_c = {c for c, _ in out}
    free_c = [c for c in other_c if c not in used_c]
    rng.shuffle(free_c)
    while len(out) < n and free_c:
        out.append((free_c.pop(), rng.choice(other_s)))
    return out


def make_scene(seed: int) -> PlantedScene:
    """One scene, deterministic in `seed`; retried internally until the target is placed off-centre."""
    rng = random.Random(seed)
    width, height = rng.choices(SIZES, SIZE_WEIGHTS)[0]
    group = rng.choices(GROUPS, GROUP_WEIGHTS)[0]
    n = rng.randint(3, 5)
    attrs = _attributes(rng, group, n)
    g = rng.randint(200, 240)
    top = tuple(min(255, g + rng.randint(-12, 12)) for _ in range(3))
    d = rng.randint(0, 30)  # darker towards the bottom, the same for every channel
    bottom = tuple(c - d for c in top)
    for _attempt in range(100):
        placed: list[tuple[int, int, int]] = []
        _place(rng, width, height, len(attrs), placed)
        if len(placed) < min(len(attrs), 3 if group != "both" else 3):
            continue
        x, _, s = placed[0]
        if abs(x + s / 2 - width / 2) >= CENTRE_MARGIN * width:
            break
    objects = [SceneObject(shape, colour, sq) for (colour, shape), sq in zip(attrs, placed)]
    scene = PlantedScene(width, height, (top, bottom), objects, target=0, group=group)
    for obj in scene.objects:
        mask = Image.new("L", (width, height), 0)
        draw_shape(ImageDraw.Draw(mask), obj.shape, *obj.square, 255)
        x0, y0, x1, y1 = mask.getbbox()
        obj.bbox = [x0, y0, x1 - x0, y1 - y0]
    order = list(range(len(objects)))  # the target is not always drawn (and listed) first
    rng.shuffle(order)
    scene.objects = [objects[i] for i in order]
    scene.target = order.index(0)
    return scene


def render(scene: PlantedScene) -> Image.Image:
    """The RGB image: a vertical shading between the two background colours, then the objects."""
    (t, b) = scene.background
    column = Image.new("RGB", (1, scene.height))
    for yy in range(scene.height):
        f = yy / max(1, scene.height - 1)
        column.putpixel((0, yy), tuple(round(t[i] + (b[i] - t[i]) * f) for i in range(3)))
    img = column.resize((scene.width, scene.height), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, *obj.square, COLORS[obj.color])
    return img


def side_of(scene: PlantedScene) -> str:
    x, _, w, _ = scene.target_object.bbox
    return "left" if x + w / 2 < scene.width / 2 else "right"


def question(scene: PlantedScene) -> str:
    obj = scene.target_object
    return f"is the {obj.color} {obj.shape} on the left or the right?"


STALE_NAME = re.compile(r"planted_\d+\.png")


def remove_stale_images(folder: Path, keep: set[str]) -> int:
    """Remove the builder's own images (`planted_<digits>.png`) in `folder` whose names are not in `keep`;
    other files are left alone. Returns how many were removed.

    Args:
        folder: the images folder of a grounding set.
        keep: file names the new set writes.
    """
    removed = 0
    for path in folder.iterdir():
        if STALE_NAME.fullmatch(path.name) and path.name not in keep and path.is_file():
            path.unlink()
            removed += 1
    return removed


def write_grounding_set(out: str | Path, n: int, seed: int = 0) -> Path:
    """Write `out/planted_grounding.jsonl` and `out/images/planted_NNNNN.png`; return the JSONL path.
    Images named `planted_<digits>.png` that an earlier, larger or differently numbered build left in
    `out/images/` are removed (and counted in the log), so the folder holds exactly the rows' images."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    width = max(4, int(math.log10(max(n, 1))) + 1)
    rows = []
    stale = remove_stale_images(out / "images", {f"planted_{i:0{width}d}.png" for i in range(n)})
    if stale:
        logging.getLogger("lhf").warning("removed %d images of an earlier build from %s", stale, out / "images")
    for i in range(n):
        scene = make_scene(seed * 1_000_003 + i)
        sid = f"planted_{i:0{width}d}"
        rel = f"images/{sid}.png"
        render(scene).save(out / rel, optimize=True)
        rows.append(dict(id=sid, prompt=question(scene), image_path=rel, bbox=scene.target_object.bbox,
                         answer=side_of(scene), group=scene.group,
                         objects=[dict(color=o.color, shape=o.shape, bbox=o.bbox) for o in scene.objects]))
    path = out / "planted_grounding.jsonl"
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path
