"""AttentionRecord files: round trip, validation with clear errors, never pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lab.records.record import AttentionRecord, check_compatible, record_path, safe_id
from lab.capture.station import Strategy, collect
from utils.errors import UserError


@pytest.fixture(scope="module")
def record(tiny_vlm):
    (rec,) = collect(tiny_vlm, [(Image.new("RGB", (70, 40), (0, 90, 200)), "what color ?", "s1", "img.png")],
                     Strategy(), max_new_tokens=3)
    return rec


def test_roundtrip(record, tmp_path):
    path = record.save(record_path(tmp_path, "s1"))
    assert path == tmp_path / "attention" / "s1.safetensors"
    back = AttentionRecord.load(path)
    assert np.array_equal(back.image_attention, record.image_attention)
    assert back.image_attention.dtype == np.float32 and back.input_ids.dtype == np.int64
    assert back.meta == record.meta
    assert back.layout.image_size == (70, 40)
    assert back.maps().shape == (4, 4, 4, 4)
    assert back.meta.query_positions == [len(back.input_ids) - 1]
    assert len(back.generated_ids) >= 1 and back.meta.generated_text


def test_file_is_safetensors_not_pickle(record, tmp_path):
    path = record.save(tmp_path / "r.safetensors")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + n])
    assert set(header) >= {"image_attention", "input_ids", "__metadata__"}
    meta = json.loads(header["__metadata__"]["attention_record"])
    assert meta["format"] == "attention_record" and meta["model_type"] == "llava"


def test_shape_mismatch_is_refused(record, tmp_path):
    bad = AttentionRecord(record.image_attention[:, :, :, :-1], record.input_ids, record.meta)
    with pytest.raises(UserError, match="image tokens"):
        bad.save(tmp_path / "bad.safetensors")


def test_corrupt_and_foreign_files(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="junk.safetensors"):
        AttentionRecord.load(p)
    from safetensors.numpy import save_file

    q = tmp_path / "foreign.safetensors"
    save_file({"x": np.zeros(3, dtype=np.float32)}, str(q))
    with pytest.raises(UserError, match="metadata"):
        AttentionRecord.load(q)
    with pytest.raises(UserError, match="not found"):
        AttentionRecord.load(tmp_path / "missing.safetensors")


def test_records_from_two_models_are_not_mixed(record):
    import copy

    other = copy.deepcopy(record)
    other.meta.fingerprint["model"]["weights"] = "0" * 32
    with pytest.raises(UserError, match="model.weights"):
        check_compatible([record, other])
    moved = copy.deepcopy(record)  # the same weights under another path: one model
    moved.meta.model_id = "moved/copy"
    check_compatible([record, moved])
    old = copy.deepcopy(record)  # records without fingerprints (older tool) fall back to model_id
    old2 = copy.deepcopy(record)
    old.meta.fingerprint, old2.meta.fingerprint = {}, {}
    old2.meta.model_id = "another/model"
    with pytest.raises(UserError, match="model_id"):
        check_compatible([old, old2])
    with pytest.raises(UserError, match="no fingerprint"):
        check_compatible([record, old])


def test_safe_id():
    assert safe_id("../../etc/passwd") == "_.._etc_passwd~e5e710ea784151b5"
    assert safe_id("ok-id_1.x") == "ok-id_1.x"
