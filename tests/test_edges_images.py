"""Image files at their edges: modes, sizes, EXIF orientation, formats, special files, bombs.

The loader (utils/images.py) must give what a viewer shows -- upright, 8 bits by range, alpha on
white -- or one UserError naming the file; never another exception, never a hang. Expected pixels
are computed here with numpy from the stored array and the EXIF rule, independently of PIL.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from edges_common import EXAMPLES, bomb_png, no_hang, run, scene, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from utils.errors import UserError
from utils.images import load_image

ORIENT = {  # EXIF orientation -> the upright array from the stored one (the EXIF definition)
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
LOSSLESS = ("PNG", "TIFF", "BMP", "WEBP_LOSSLESS")


def _save(img: Image.Image, path, fmt: str, orientation: int | None) -> None:
    kw = {}
    if orientation:
        ex = Image.Exif()
        ex[0x0112] = orientation
        kw["exif"] = ex.tobytes()
    if fmt == "WEBP_LOSSLESS":
        img.save(path, "WEBP", lossless=True, **kw)
    elif fmt == "JPEG":
        img.save(path, "JPEG", quality=95, **kw)
    elif fmt == "BMP":
        img.save(path, "BMP")
    else:
        img.save(path, fmt, **kw)


@st.composite
def image_files(draw):
    w = draw(st.integers(1, 48))
    h = draw(st.sampled_from([1, 2, 3, 17, 48, draw(st.integers(1, 48))]))
    if draw(st.booleans()):
        w, h = (w * 40, max(1, h // 8)) if draw(st.booleans()) else (max(1, w // 8), h * 40)  # extreme aspect
    mode = draw(st.sampled_from(["RGB", "L", "1", "P", "P+t", "RGBA", "LA", "CMYK", "I;16", "I", "F"]))
    fmt = draw(st.sampled_from({"RGB": ["PNG", "JPEG", "TIFF", "BMP", "WEBP_LOSSLESS"], "L": ["PNG", "JPEG", "TIFF"],
                                "1": ["PNG", "BMP"], "P": ["PNG", "GIF"], "P+t": ["PNG", "GIF"],
                                "RGBA": ["PNG", "TIFF", "WEBP_LOSSLESS"], "LA": ["PNG"], "CMYK": ["TIFF", "JPEG"],
                                "I;16": ["PNG", "TIFF"], "I": ["TIFF"], "F": ["TIFF"]}[mode]))
    orientation = draw(st.sampled_from([None, 1, 2, 3, 4, 5, 6, 7, 8])) if fmt in ("PNG", "JPEG", "TIFF", "WEBP_LOSSLESS") else None
    seed = draw(st.integers(0, 2**31 - 1))
    return w, h, mode, fmt, orientation, seed


def _make(w, h, mode, seed):
    """The stored image and the RGB uint8 array a viewer shows for it (before orientation)."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        lo, hi = sorted(rng.integers(0, 65536, 2).tolist())
        a = rng.integers(lo, hi + 1, (h, w)).astype(np.uint16)
        g = np.rint(a / 257.0).astype(np.uint8)
        return Image.fromarray(a), np.stack([g] * 3, -1)
    if mode == "I":
        a = rng.integers(-(2**20), 2**20, (h, w)).astype(np.int32) >> int(rng.integers(0, 21))
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 65535:  # fits 16 bits: scaled like a 16-bit image
            g = np.rint(a / 257.0).astype(np.uint8)
        elif hi == lo:
            g = np.full(a.shape, 128, np.uint8)
        else:
            g = np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return Image.fromarray(a), np.stack([g] * 3, -1)
    if mode == "F":
        a = rng.random((h, w)).astype(np.float32)
        g = np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
        return Image.fromarray(a), np.stack([g] * 3, -1)
    rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (h, w, 1)).astype(np.float64)
        im = Image.fromarray(np.concatenate([rgb, alpha.astype(np.uint8)], -1), "RGBA")
        over = np.rint(rgb * alpha / 255.0 + 255.0 * (1 - alpha / 255.0)).astype(np.uint8)
        return im, over
    if mode == "LA":
        im = Image.fromarray(np.stack([rgb[..., 0], np.zeros((h, w), np.uint8)], -1), "LA")  # fully transparent
        return im, np.full((h, w, 3), 255, np.uint8)
    im = Image.fromarray(rgb, "RGB")
    if mode in ("P", "P+t"):
        im = im.quantize(8)
        if mode == "P+t":
            im.info["transparency"] = 0
        return im, None
    return im.convert(mode), None


@settings(max_examples=60 * EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=image_files())
def test_any_image_loads_upright_in_8_bit_rgb_or_fails_in_one_line(spec, tmp_path_factory):
    w, h, mode, fmt, orientation, seed = spec
    stored, expected = _make(w, h, mode, seed)
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.split('_')[0].lower()}"
    try:
        _save(stored, path, fmt, orientation)
    except (OSError, ValueError, KeyError):  # this writer cannot store that combination: nothing to read
        return
    with no_hang(30):
        try:
            got = load_image(path)
        except UserError as e:
            assert str(path) in str(e)
            pytest.fail(f"a valid {mode} {fmt} {w}x{h} image was refused: {e}")
    assert got.mode == "RGB"
    o = orientation or 1
    ew, eh = (h, w) if o >= 5 else (w, h)
    assert got.size == (ew, eh), (spec, got.size)
    arr = np.asarray(got)
    if fmt in LOSSLESS:
        if expected is None and mode != "P+t":  # RGB / palette / grey / CMYK: the stored image's RGB, then upright
            expected = np.asarray(stored.convert("RGB"))
        if expected is not None:
            diff = np.abs(arr.astype(int) - ORIENT[o](expected).astype(int)).max()
            assert diff <= (1 if mode == "RGBA" else 0), (spec, diff)
    if mode in ("I;16", "F", "I") and arr.size > 4:
        assert arr.std() > 0 or expected.std() == 0  # never flattened to one white / black value


def test_exif_orientation_on_a_known_marker(tmp_path):
    """Orientation 6 (the phone camera's portrait): the marker at the stored top-left is at the
    upright top-right, and the size is swapped."""
    a = np.zeros((20, 30, 3), np.uint8)
    a[0, 0] = (255, 0, 0)
    p = tmp_path / "o6.png"
    _save(Image.fromarray(a), p, "PNG", 6)
    up = np.asarray(load_image(p))
    assert up.shape == (30, 20, 3) and tuple(up[0, 19]) == (255, 0, 0)


@pytest.mark.parametrize("kind", ["fifo", "fifo_symlink", "dir", "devnull", "missing", "corrupt", "truncated",
                                  "bomb", "zero_bytes", "text", "nan_float"])
def test_unreadable_image_is_one_message_never_a_hang(kind, tmp_path):
    p = tmp_path / f"{kind}.png"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "fifo_symlink":
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", p)
    elif kind == "dir":
        p.mkdir()
    elif kind == "devnull":
        os.symlink("/dev/null", p)
    elif kind == "corrupt":
        p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif kind == "truncated":
        scene(200, 200).save(p)
        p.write_bytes(p.read_bytes()[:300])
    elif kind == "bomb":
        bomb_png(p)
    elif kind == "zero_bytes":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("hello")
    elif kind == "nan_float":
        p = tmp_path / "nan.tiff"
        a = np.zeros((4, 4), np.float32)
        a[1, 1] = np.nan
        Image.fromarray(a).save(p)
    with no_hang(20), pytest.raises(UserError) as e:
        load_image(p)
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    expect = {"fifo": "FIFO", "fifo_symlink": "FIFO", "dir": "folder", "devnull": "character device",
              "missing": "not found", "bomb": "30000x30000 = 900.0 megapixels, above the limit max_image_pixels",
              "nan_float": "NaN"}.get(kind, "cannot read image")
    assert expect in msg, msg


def test_pixel_limit_is_a_setting(tmp_path):
    p = tmp_path / "s.png"
    scene(100, 50).save(p)
    with pytest.raises(UserError, match="max_image_pixels=4999"):
        load_image(p, max_pixels=4999)
    assert load_image(p, max_pixels=5000).size == (100, 50)


@pytest.fixture(scope="module")
def toy():
    from helpers import make_cfg

    from llava.model import load_from_config

    return load_from_config(make_cfg().model)


def test_exif_rotated_photo_gives_the_upright_record_and_box(toy, tmp_path):
    """The issue's case: a JPEG / PNG stored sideways with EXIF orientation 6. The record's image is
    the upright one and the predicted box lands where it does on the upright image."""
    from lab.records.record import AttentionRecord, record_path
    from lab.stages.visualize import visualize_record

    src = os.path.join(os.path.dirname(__file__), "..", "examples", "toy")
    line = json.loads(open(os.path.join(src, "toy_grounding.jsonl")).readline())
    up = Image.open(os.path.join(src, line["image_path"])).convert("RGB")
    stored = Image.fromarray(np.rot90(np.asarray(up), 1).copy())  # orientation 6 turns it back upright
    _save(stored, tmp_path / "side.png", "PNG", 6)
    _save(stored, tmp_path / "side.jpg", "JPEG", 6)
    up.save(tmp_path / "up.png")
    rows = [dict(line, id=k, image_path=f"{k}.{ext}") for k, ext in (("up", "png"), ("side", "png"), ("side_jpg", "jpg"))]
    rows[2]["image_path"] = "side.jpg"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "run"
    code, msg, _ = run(toy, out, "stage=evaluate", f"data_file={data}", "max_new_tokens=0")
    assert code == 0, msg
    heads = [(1, 0), (1, 3), (2, 2)]  # the toy's localization heads (docs/toy.md)
    from helpers import make_cfg

    cfg = make_cfg(f"output_dir={out}")
    ious = {}
    for r in rows:
        rec = AttentionRecord.load(record_path(out, r["id"]))
        assert tuple(rec.meta.image_size) == up.size
        ious[r["id"]] = visualize_record(rec, cfg, out / "figs", heads)["iou"]
    assert ious["side"] == pytest.approx(ious["up"], abs=1e-9)
    assert ious["side_jpg"] == pytest.approx(ious["up"], abs=0.1)
    assert ious["up"] > 0.3, ious


def test_high_bit_depth_images_reach_the_model_as_the_viewer_shows_them(toy, tmp_path):
    """16-bit PNG and float TIFF of a toy scene: the model sees the grey scene, not a white / black page."""
    from lab.records.record import AttentionRecord, record_path

    src = os.path.join(os.path.dirname(__file__), "..", "examples", "toy")
    line = json.loads(open(os.path.join(src, "toy_grounding.jsonl")).readline())
    grey = np.asarray(Image.open(os.path.join(src, line["image_path"])).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(grey.astype(np.float32) / 255.0).save(tmp_path / "gf.tiff")
    Image.fromarray(grey).save(tmp_path / "g8.png")
    for name in ("g16.png", "gf.tiff"):
        assert np.array_equal(np.asarray(load_image(tmp_path / name))[..., 0], grey), name
    rows = [dict(line, id=n.split(".")[0], image_path=n) for n in ("g8.png", "g16.png", "gf.tiff")]
    out = tmp_path / "run"
    code, msg, _ = run(toy, out, "stage=batch", f"data_file={write_jsonl(tmp_path / 'd.jsonl', rows)}",
                       "max_new_tokens=0")
    assert code == 0, msg
    att = [AttentionRecord.load(record_path(out, r["id"])).image_attention for r in rows]
    assert np.array_equal(att[0], att[1]) and np.array_equal(att[0], att[2])
