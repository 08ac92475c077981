"""``m3d evaluate``: writes report.json, curves.csv and plots; user errors exit 2 with one line."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from micro3diff.cli import main


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {
        "vol0": tmp_path / "vol0.npy", "vol1": tmp_path / "vol1.npy", "ref3d": tmp_path / "ref3d.npy",
        "ref2d": tmp_path / "ref2d.npy", "grey": tmp_path / "grey.npy", "labels": tmp_path / "labels.npy",
    }
    np.save(paths["vol0"], (rng.random((12, 12, 12)) < 0.4).astype(np.uint8))
    np.save(paths["vol1"], (rng.random((12, 12, 12)) < 0.4).astype(np.uint8))
    np.save(paths["ref3d"], (rng.random((20, 20, 20)) < 0.4).astype(np.uint8))
    np.save(paths["ref2d"], (rng.random((30, 30)) < 0.4).astype(np.uint8))
    np.save(paths["grey"], np.where(rng.random((12, 12, 12)) < 0.4, 180.0, 20.0))
    np.save(paths["labels"], rng.integers(0, 3, (12, 12, 12)).astype(np.uint8))
    return paths


def run(*args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


@pytest.mark.parametrize("mode, ref", [("3d", "ref3d"), ("2d", "ref2d")])
def test_evaluate_writes_report_csv_and_plots(files, tmp_path, mode, ref):
    out = tmp_path / f"report_{mode}"
    result = run(files["vol0"], files["vol1"], "--reference", files[ref], "--mode", mode, "--crops", 4, "-o", out)
    assert result.exit_code == 0, result.output
    assert "S2" in result.output and "baseline" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == mode and report["r_max"] == 6 and len(report["generated"]) == 2
    for name in ("two_point", "lineal_path"):
        m = report["metrics"][name]
        assert len(m["reference"]) == 7 and len(m["errors"]) == 2 and m["floor"]["n_crops"] == 4
        assert set(m["part_errors"]) == ({"x", "y", "z"} if mode == "3d" else {"yz", "xz", "xy"})
        assert (out / f"{name}.png").stat().st_size > 1000
    with open(out / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["curve"] for r in rows} >= {"reference", "generated_mean", "generated_std", "floor_mean", "baseline"}


def test_generated_equal_to_reference_scores_zero(files, tmp_path):
    result = run(files["vol0"], "--reference", files["vol0"], "-o", tmp_path / "self")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "self" / "report.json").read_text())
    assert all(m["error_of_mean"] == 0.0 for m in report["metrics"].values())
    assert report["metrics"]["two_point"]["floor"] is None and report["notes"]


def test_threshold_and_phase_options(files, tmp_path):
    assert run(files["grey"], "--reference", files["grey"], "--threshold", "otsu", "-o", tmp_path / "a").exit_code == 0
    assert run(files["grey"], "--reference", files["grey"], "--threshold", 100, "-o", tmp_path / "b").exit_code == 0
    assert run(files["labels"], "--reference", files["labels"], "--phase", 2, "-o", tmp_path / "c").exit_code == 0


@pytest.mark.parametrize("args, match", [
    (["missing.npy", "--reference", "ref3d"], "no such file"),
    (["grey", "--reference", "ref3d"], "not binary"),
    (["labels", "--reference", "ref3d"], "pass phase=K"),
    (["vol0", "--reference", "ref2d", "--mode", "3d"], "needs a 3D reference"),
    (["vol0", "--reference", "ref3d", "--mode", "2d"], "needs a 2D reference"),
    (["vol0", "--reference", "ref3d", "--r-max", 40], "r_max=40 out of range"),
    (["vol0", "--reference", "ref3d", "--threshold", "high"], "--threshold must be a number or 'otsu'"),
    (["vol0", "ref2d", "--reference", "ref3d"], "different shapes"),
])
def test_user_errors_exit_2_with_one_line(files, tmp_path, args, match):
    args = [files.get(a, tmp_path / a) if isinstance(a, str) and not a.startswith("-") and not a[0].isdigit() else a
            for a in args]
    result = run(*args, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) == 1
