"""Beyond the paper (issue 8): any volume size + drift, periodic seams, per-plane models, multiphase, .vti."""
import json

import numpy as np
import pytest
from click.testing import CliRunner, Result

from conftest import Spy
from micro3diff import axes
from micro3diff.axes import PLANES
from micro3diff.cli import main
from micro3diff.diffusion.sampler import iter_sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import SamplerSettings
from micro3diff.errors import UserError
from micro3diff.io.arrays import read_array
from micro3diff.io.vti import read_vti
from micro3diff.metrics import correlation, drift
from micro3diff.synth import generators as synth

FAST = ["--steps", "3", "--harmonize", "2"]


def m3d(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res) -> bool:
    return res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and res.output.startswith("Error: ")


# --- 1. any volume size, drift -------------------------------------------------------------------


def test_block_drift_small_for_stationary_large_for_a_gradient():
    rng = np.random.default_rng(0)
    stationary = (rng.random((16, 16, 48)) < 0.4).astype(np.uint8)
    graded = (rng.random((16, 16, 48)) < np.linspace(0.1, 0.7, 48)).astype(np.uint8)
    calm, steep = drift.block_drift(stationary, 3), drift.block_drift(graded, 3, metric="lineal_path")
    assert calm.axis == 2 and calm.curves.shape == (3, 9) and calm.whole.shape == (9,)
    assert calm.first_last < 8 and float(calm.to_whole.max()) < 8  # i.i.d.: phi of a 16^3 block varies ~2 %
    assert steep.first_last > 100 and float(steep.to_whole.max()) > 30
    natural = drift.reference_drift(stationary, (16, 16, 24), 2, n_crops=3)
    assert natural.shape == (3,) and float(natural.max()) < 10
    with pytest.raises(UserError):
        drift.block_drift(stationary, 1)
    with pytest.raises(UserError):
        drift.block_drift(stationary[0], 2)


def test_any_shape_with_max_batch_and_evaluate_blocks(ckpt, tmp_path):
    res = m3d("sample", ckpt, "--shape", 8, 8, 24, "--max-batch", 3, "--format", "npy", "-o", tmp_path, *FAST)
    assert res.exit_code == 0, res.output
    vol = np.load(tmp_path / "tiny_0.npy")
    assert vol.shape == (8, 8, 24) and json.loads((tmp_path / "tiny_0.json").read_text())["max_batch"] == 3
    ref = synth.overlapping_spheres((16, 16, 48), 2.0, 0.6, seed=0).array
    np.save(tmp_path / "ref.npy", ref)
    res = m3d("evaluate", tmp_path / "tiny_0.npy", "-r", tmp_path / "ref.npy", "--crops", 2, "--blocks", 3,
              "-o", tmp_path / "report")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report" / "drift.json").read_text())
    for metric in ("two_point", "lineal_path"):
        assert report[metric]["axis"] == 2 and len(report[metric]["first_last"]) == 1
        assert report[metric]["reference_first_last"]["n_crops"] == 16
        assert len(report[metric]["block_fractions"][0]) == 3
    assert "drift S2 (axis 2, 3 blocks)" in res.output


@pytest.mark.parametrize("args", [["--blocks", 1], ["--blocks", -2], ["--blocks", 2, "--mode", "2d"]])
def test_evaluate_blocks_bad_combinations_one_line_exit_2(tmp_path, args):
    np.save(tmp_path / "vol.npy", np.zeros((8, 8, 8), np.uint8) | (np.arange(8) % 2).astype(np.uint8))
    np.save(tmp_path / "img.npy", (np.arange(64).reshape(8, 8) % 2).astype(np.uint8))
    gen = tmp_path / ("img.npy" if "2d" in args else "vol.npy")
    res = m3d("evaluate", gen, "-r", tmp_path / "img.npy" if "2d" in args else tmp_path / "vol.npy", "--crops", 1,
              *args, "-o", tmp_path / "report")
    assert one_line_error(res), res.output


# --- 2. periodic ----------------------------------------------------------------------------------


def test_seam_errors_small_without_seam_large_with_one():
    rng = np.random.default_rng(0)
    uniform = (rng.random((32, 32, 32)) < 0.5).astype(np.uint8)
    ramp = (rng.random((32, 32, 32)) < np.linspace(0.05, 0.95, 32)[:, None, None]).astype(np.uint8)
    flat, seam = drift.seam_errors(uniform), drift.seam_errors(ramp)
    assert flat["two_point_periodic_vs_open"] < 0.5 and max(flat["lineal_path_tiled"]) < 0.5
    assert seam["two_point_periodic_vs_open"] > 3 and seam["lineal_path_tiled"][0] > 2 > seam["lineal_path_tiled"][1]
    assert all(0.9 < c < 1.1 for c in flat["interface_contrast"])
    assert seam["interface_contrast"][0] > 3 and seam["interface_contrast"][1] < 1.2
    wrapped, cut = (drift.seam_errors(synth.overlapping_spheres((32, 32, 32), 3.0, 0.6, periodic=p, seed=0).array)
                    for p in (True, False))
    assert max(wrapped["interface_contrast"]) < 1.5 < 3 < min(cut["interface_contrast"])
    with pytest.raises(UserError):
        drift.seam_errors(uniform[:5])


# --- 3. anisotropic: per-plane models ---------------------------------------------------------------


def test_each_plane_model_sees_its_plane_as_plane_stack_cuts_it():
    """Per-plane spies: model p gets only plane p's slices, oriented as axes.plane_stack cuts the volume."""
    spies = {p: Spy() for p in PLANES}
    records = [r.x[0, 0].clone() for r in iter_sample_volume(spies, NoiseSchedule(), (4, 6, 8), 1,
                                                                   SamplerSettings.make(steps=5, n_harmonize=1))]
    assert [len(spies[p].inputs) for p in PLANES] == [2, 2, 1]
    for step in range(5):  # step i uses plane i % 3
        plane = PLANES[step % 3]
        inp = spies[plane].inputs[step // 3]
        assert inp.shape[1] == 1 and inp.shape[2:] == axes.plane_stack(np.zeros((4, 6, 8)), plane).shape[1:]
        if step:
            expected = axes.plane_stack(records[step - 1].numpy(), plane)
            np.testing.assert_array_equal(inp[:, 0].numpy(), expected)


def test_plane_stack_and_axis_lineal_path_show_needles():
    needles = synth.ellipsoids((24, 24, 24), (8.0, 2.0, 2.0), 0.2, seed=0).array
    assert axes.plane_stack(needles, "xz").shape == (24, 24, 24)
    np.testing.assert_array_equal(axes.plane_stack(needles, "xz")[3], needles[:, 3, :].T)
    np.testing.assert_array_equal(axes.plane_stack(needles, "xy")[5], needles[:, :, 5])
    along_d, along_h, along_w = correlation.axis_lineal_path(needles, 6, phase=1)
    assert along_d > 3 * max(along_h, along_w)
    with pytest.raises(UserError):
        axes.plane_stack(needles, "zz")


# --- 4. multiphase ----------------------------------------------------------------------------------


def test_multiphase_train_sample_evaluate_end_to_end(ckpt, tmp_path):
    data = synth.multiphase((16, 16, 16), (5.0, 3.0), (1.0, 0.5), (0.2, 0.1), seed=0).array
    np.save(tmp_path / "multi.npy", data)
    res = m3d("train", tmp_path / "multi.npy", "--phases", 3, "--axis", "all", "--image-size", 8, "--preset", "tiny",
              "--steps", 2, "--batch", 2, "--save-every", 2, "--threads", 1, "--no-progress", "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    model = tmp_path / "run" / "model.safetensors"
    res = m3d("sample", model, "--shape", 8, 8, 12, "--format", "npy", "-o", tmp_path / "out", *FAST)
    assert res.exit_code == 0, res.output
    vol = np.load(tmp_path / "out" / "model_0.npy")
    assert vol.shape == (8, 8, 12) and vol.dtype == np.uint8 and vol.max() <= 2
    assert json.loads((tmp_path / "out" / "model_0.json").read_text())["channels"] == 3
    fractions = []
    for k in range(3):
        res = m3d("evaluate", tmp_path / "out" / "model_0.npy", "-r", tmp_path / "multi.npy", "--phase", k,
                  "--crops", 1, "-o", tmp_path / f"report_{k}")
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / f"report_{k}" / "report.json").read_text())
        assert report["phase"] == k
        fractions.append(report["generated"][0]["volume_fraction"])
    assert sum(fractions) == pytest.approx(1.0)
    # per-plane models must agree on channels: a 3-phase and a binary model cannot be mixed
    res = m3d("sample", "--models", f"yz={model}", "--models", f"xz={ckpt},xy={ckpt}", "--shape", 8, 8, 8,
              "-o", tmp_path / "mixed", *FAST)
    assert one_line_error(res), res.output


# --- 5. VTK export ----------------------------------------------------------------------------------


def test_vti_reads_back_identical_to_tif(ckpt, tmp_path):
    for fmt in ("tif", "vti"):
        res = m3d("sample", ckpt, "--shape", 4, 8, 12, "--format", fmt, "--seed", 3, "-o", tmp_path, *FAST)
        assert res.exit_code == 0, res.output
    vol, spacing, origin = read_vti(tmp_path / "tiny_0.vti")
    tif = read_array(tmp_path / "tiny_0.tif")  # phase labels (the file stores two phases as 0/255)
    assert vol.dtype == tif.dtype == np.uint8 and vol.shape == (4, 8, 12)
    np.testing.assert_array_equal(vol, tif)
    assert spacing == (1.0, 1.0, 1.0) and origin == (0.0, 0.0, 0.0)
    assert "tiny_0.vti" in json.loads((tmp_path / "tiny_0.json").read_text())["files"]
