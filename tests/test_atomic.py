"""Atomic writes leave either the old file or the new one, and no temp files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detect import atomic


def test_json_and_npz_round_trip(tmp_path):
    atomic.write_json(tmp_path / "m.json", {"mAP": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"mAP": 0.5}
    atomic.save_npz(tmp_path / "a.npz", boxes=np.arange(8.0).reshape(2, 4))
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["boxes"], np.arange(8.0).reshape(2, 4))


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "detections.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.txt"]
