"""benchmarks/gpu_run.sh --smoke: the one GPU command, run on the CPU at tiny sizes, writes every result file."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import package_env
from micro3diff.io.checkpoint import load_checkpoint

REPO = Path(__file__).parents[1]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash + timeout")
def test_gpu_run_smoke(tmp_path):
    out = tmp_path / "out"
    res = subprocess.run(["bash", str(REPO / "benchmarks/gpu_run.sh"), "--smoke", str(out)], capture_output=True,
                         text=True, env=package_env(), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["smoke"] == 1 and set(run["parts"]) == {"cuda_tests", "gpu_e2e", "quality"}
    failed = {k: p for k, p in run["parts"].items() if p["exit"] != 0}
    assert not failed, {k: (p, (out / f"{k}.log").read_text()[-2000:]) for k, p in failed.items()}
    e2e = json.loads((out / "gpu_e2e.json").read_text())
    assert {"env", "speed", "fused"} <= set(e2e["parts"])
    rows = json.loads((out / "quality.json").read_text())["rows"]
    assert {"polycrystal", "spheres"} <= {r["case"] for r in rows}  # carbonate also where ../shared/data exists
    for case in ("spheres", "polycrystal"):
        assert (out / f"{case}.safetensors").stat().st_size < 16 * 2**20
        assert load_checkpoint(out / f"{case}.safetensors").x0_moments is not None  # calibrated after the box
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len([p for p in files if p.suffix == ".safetensors"]) <= 8 and not (out / "work").exists()
    assert (out / "quality.md").read_text().startswith("# Quality")
