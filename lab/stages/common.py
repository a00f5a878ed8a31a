"""Helpers several stages and views share: the records of a folder, a record's image for figures.
(Every per-record number is `lab.analysis.record_numbers`.)"""

from __future__ import annotations

import logging
from pathlib import Path

from lab.records.record import AttentionRecord
from utils.errors import UserError
from utils.images import load_image

log = logging.getLogger(__name__)


def record_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise UserError(f"no attention folder {folder}; run stage=batch first or pass attention_dir=<folder of records>")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"no records (*.safetensors) in {folder}; run stage=batch first or pass attention_dir=")
    return files


def image_or_blank(rec: AttentionRecord):
    """The record's image (utils.images.load_image: upright, 8-bit RGB), or a grey canvas of its size
    when the file is gone, unreadable or no longer the size the record was made from."""
    from PIL import Image

    p = rec.meta.image_path
    size = tuple(rec.meta.image_size)
    why = "no image path in the record"
    if p:
        try:
            img = load_image(p)
            if img.size == size:
                return img
            why = f"it is {img.size[0]}x{img.size[1]} now, the record was made from {size[0]}x{size[1]}"
        except UserError as e:
            why = str(e)
    log.warning("image %s of %s: %s; drawing on a blank canvas", p, rec.path, why)
    return Image.new("RGB", size, (128, 128, 128))
