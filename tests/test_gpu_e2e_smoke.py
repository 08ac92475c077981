"""benchmarks/gpu_e2e.py --smoke: every part runs on CPU at tiny sizes and writes the JSON the GPU run will."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
gpu_e2e = pytest.importorskip("gpu_e2e")


def test_smoke_writes_every_part_and_resumes(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    gpu_e2e.main(["--smoke", "--device", "cpu", "--out", str(out), "--parts", "env", "speed", "maxsize"])
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "gpu_e2e" and doc["device"] and doc["versions"]["torch"] and doc["smoke"] is True
    for part in ("env", "speed", "maxsize"):
        assert doc["parts"][part]["command"] and doc["parts"][part]["date"] and doc["parts"][part]["seconds"] >= 0
    row = doc["parts"]["speed"]["rows"]["tiny"]
    assert row["reference"]["nfe"] == row["optimized"]["nfe"] == [1, 2]
    assert row["relative_l2_difference"] < 1e-5  # CPU: the fast path computes the reference volume
    assert row["speedup_equal_nfe"] > 0 and 0 < row["optimized"]["unet_share"] <= 1
    assert doc["parts"]["maxsize"]["all_slices"]["largest"] == 24  # nothing runs out of memory on CPU
    assert "unet_share" in doc["targets"]

    gpu_e2e.main(["--smoke", "--device", "cpu", "--out", str(out), "--parts", "speed", "throughput", "fused",
                  "quality"])
    assert "speed: already in" in capsys.readouterr().out  # resumable: finished parts are skipped
    doc = json.loads(out.read_text())
    tp = doc["parts"]["throughput"]["rows"][0]
    assert tp["volumes_per_batch"] == 2 and tp["volumes_per_hour"]["paper"] > 0
    assert "skipped" in doc["parts"]["fused"] or doc["parts"]["fused"]["of_copy_inplace_philox"] > 0
    q = doc["parts"]["quality"]
    assert {(r["preset"], r["mode"]) for r in q["rows"]} == {("preview", "fast_path"), ("fast", "fp32_reference")}
    assert all(r["two_point"]["mean"] >= 0 and r["lineal_path"]["mean"] >= 0 for r in q["rows"])
    assert q["floor"]["two_point"]["mean"] >= 0 and q["shuffled"]["lineal_path"] > 0
