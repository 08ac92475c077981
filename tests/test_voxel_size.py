"""Voxel size end to end: ``m3d train --voxel-size / --unit`` into the checkpoint, ``m3d evaluate`` reading it from
the inputs (TIFF tags or sidecar) or the flag, physical lags on the plots, ``--threads`` on evaluate."""
import json

import matplotlib.figure
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.io.arrays import read_voxel_size, write_phases
from micro3diff.io.checkpoint import load_checkpoint
from micro3diff.io.files import write_json

TRAIN = ["--preset", "tiny", "--image-size", "8", "--batch", "2", "--steps", "1", "--device", "cpu", "-q"]

pytestmark = pytest.mark.usefixtures("one_thread")


def m3d(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def binary(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.4).astype(np.uint8)


@pytest.mark.parametrize("flags, size, unit", [
    ([], [0.7] * 3, "um"),                                   # the TIFF's
    (["--voxel-size", "2,1,1", "--unit", "nm"], [2.0, 1.0, 1.0], "nm"),  # the flags override it
    (["--unit", "nm"], [0.7] * 3, "nm"),                     # --unit alone relabels the TIFF's numbers
    (["--voxel-size", 3], [3.0] * 3, "um"),
])
def test_train_records_the_voxel_size_in_the_checkpoint(tmp_path, flags, size, unit):
    write_phases(tmp_path / "v.tif", binary((8, 16, 16)), voxel_size=0.7, unit="um")
    res = m3d("train", tmp_path / "v.tif", *TRAIN, *flags, "-o", tmp_path / "run")
    assert res.exit_code == 0 and res.output == "", res.output  # -q: no "wrote" line
    data = load_checkpoint(tmp_path / "run/model.safetensors").data
    assert (list(data["voxel_size"]), data["unit"]) == (size, unit)


def test_train_voxel_size_on_npy_survives_resume_and_bad_values_exit_2(tmp_path):
    np.save(tmp_path / "v.npy", binary((8, 16, 16)))
    assert m3d("train", tmp_path / "v.npy", *TRAIN, "--voxel-size", 0.5, "-o", tmp_path / "run").exit_code == 0
    assert m3d("train", "--resume", "-o", tmp_path / "run", "--steps", 2, "-q").exit_code == 0
    ckpt = load_checkpoint(tmp_path / "run/model.safetensors")
    assert ckpt.training["step"] == 2 and list(ckpt.data["voxel_size"]) == [0.5] * 3
    for bad in ("0", "-1", "1,2", "x"):
        res = m3d("train", tmp_path / "v.npy", *TRAIN, "--voxel-size", bad, "-o", tmp_path / "bad")
        assert res.exit_code == 2 and "--voxel-size" in res.output and "Traceback" not in res.output
    res = m3d("train", "--resume", "-o", tmp_path / "run", "--voxel-size", 1)
    assert res.exit_code == 2 and "only --steps" in res.output


@pytest.fixture
def plots(monkeypatch):
    """The x label and largest lag of the first panel of every plot m3d evaluate saves."""
    seen = []
    real = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen.append((ax.get_xlabel(), max(line.get_xdata().max() for line in ax.lines)))
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def evaluate(tmp_path, generated, reference, *flags):
    res = m3d("evaluate", *generated, "--reference", reference, "--crops", 2, "-o", tmp_path / "report", *flags)
    assert res.exit_code == 0, res.output
    return json.loads((tmp_path / "report/report.json").read_text()), res


def test_evaluate_reads_the_voxel_size_and_plots_physical_lags(tmp_path, plots):
    vol, ref = binary((12, 12, 12), 1), binary((20, 20, 20), 2)
    write_phases(tmp_path / "g.tif", vol, voxel_size=0.5, unit="nm")
    np.save(tmp_path / "ref.npy", ref)
    report, _ = evaluate(tmp_path, [tmp_path / "g.tif"], tmp_path / "ref.npy")
    assert (report["voxel_size"], report["unit"]) == ([0.5] * 3, "nm")
    assert plots == [("r (nm)", 3.0)] * 2  # r_max = 6 voxels of 0.5 nm
    plots.clear()
    np.save(tmp_path / "g.npy", vol)  # a sidecar as m3d sample writes it
    write_json(tmp_path / "g.json", {"voxel_size": [2.0, 2.0, 2.0], "unit": "um"})
    assert read_voxel_size(tmp_path / "g.npy") == ((2.0, 2.0, 2.0), "um")
    report, _ = evaluate(tmp_path, [tmp_path / "g.npy"], tmp_path / "ref.npy")
    assert report["voxel_size"] == [2.0] * 3 and plots == [("r (um)", 12.0)] * 2
    plots.clear()
    report, _ = evaluate(tmp_path, [tmp_path / "g.npy"], tmp_path / "ref.npy", "--voxel-size", 0.25, "--unit", "mm")
    assert (report["voxel_size"], report["unit"]) == ([0.25] * 3, "mm") and plots[0] == ("r (mm)", 1.5)


def test_evaluate_reference_voxel_size_anisotropic_and_unknown(tmp_path, plots):
    np.save(tmp_path / "g.npy", binary((12, 12, 12), 1))
    write_phases(tmp_path / "ref.tif", binary((20, 20, 20), 2), voxel_size=1.5)
    report, _ = evaluate(tmp_path, [tmp_path / "g.npy"], tmp_path / "ref.tif")
    assert report["voxel_size"] == [1.5] * 3 and plots[-1] == ("r (um)", 9.0)  # the reference's, when only it has one
    report, res = evaluate(tmp_path, [tmp_path / "g.npy"], tmp_path / "ref.tif", "--voxel-size", "2,1,1")
    assert plots[-1] == ("r (voxels)", 6) and "anisotropic voxels" in res.output and report["unit"] == "um"
    np.save(tmp_path / "ref.npy", binary((20, 20, 20), 2))
    report, _ = evaluate(tmp_path, [tmp_path / "g.npy"], tmp_path / "ref.npy")
    assert report["voxel_size"] is None and plots[-1] == ("r (voxels)", 6)


def test_evaluate_threads_quiet_and_disagreeing_voxel_sizes(tmp_path):
    write_phases(tmp_path / "a.tif", binary((12, 12, 12), 1), voxel_size=1)
    write_phases(tmp_path / "b.tif", binary((12, 12, 12), 2), voxel_size=2)
    np.save(tmp_path / "ref.npy", binary((20, 20, 20), 3))
    threads = torch.get_num_threads()
    _, res = evaluate(tmp_path, [tmp_path / "a.tif"], tmp_path / "ref.npy", "--threads", 2, "-q")
    assert torch.get_num_threads() == 2 and "wrote" not in res.output and "S2" in res.output  # the table stays
    torch.set_num_threads(threads)
    res = m3d("evaluate", tmp_path / "a.tif", "--reference", tmp_path / "ref.npy", "--threads", 0, "-o", tmp_path / "x")
    assert res.exit_code == 2 and "--threads must be >= 1" in res.output
    res = m3d("evaluate", tmp_path / "a.tif", tmp_path / "b.tif", "--reference", tmp_path / "ref.npy", "-o", tmp_path / "y")
    assert res.exit_code == 2 and "different voxel sizes" in res.output and not (tmp_path / "y").exists()
    report, _ = evaluate(tmp_path, [tmp_path / "a.tif", tmp_path / "b.tif"], tmp_path / "ref.npy", "--voxel-size", 1)
    assert report["voxel_size"] == [1.0] * 3


def test_evaluate_warns_when_generated_and_reference_voxel_sizes_differ(tmp_path):
    write_phases(tmp_path / "g.tif", binary((12, 12, 12), 1), voxel_size=0.5)
    write_phases(tmp_path / "ref.tif", binary((20, 20, 20), 2), voxel_size=1.0)
    res = m3d("evaluate", tmp_path / "g.tif", "--reference", tmp_path / "ref.tif", "-o", tmp_path / "r")
    assert res.exit_code == 0 and "warning: the generated volumes record voxel size" in res.output
    write_phases(tmp_path / "ref.tif", binary((20, 20, 20), 2), voxel_size=0.5)
    res = m3d("evaluate", tmp_path / "g.tif", "--reference", tmp_path / "ref.tif", "-o", tmp_path / "s")
    assert res.exit_code == 0 and "warning" not in res.output
