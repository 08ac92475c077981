"""``m3d sample``: outputs, sidecar, resume, sharding, per-plane models, one-line errors, interrupts."""
import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.diffusion import sampler
from micro3diff.io.arrays import read_array

FAST = ["--steps", "3", "--harmonize", "2"]


def run(*args):
    return CliRunner().invoke(main, ["sample", *map(str, args)])


def test_writes_all_outputs_and_sidecar(ckpt, tmp_path):
    res = run(ckpt, "--count", 2, "--format", "both", "-o", tmp_path, *FAST)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"tiny_{i}{s}" for i in (0, 1) for s in (".tif", ".npy", "_ortho.png", ".json"))
    vol = tifffile.imread(tmp_path / "tiny_0.tif")  # two phases stored as 0/255, read_array maps them back
    assert vol.shape == (8, 8, 8) and vol.dtype == np.uint8 and set(np.unique(vol)) <= {0, 255}
    assert np.array_equal(read_array(tmp_path / "tiny_0.tif"), np.load(tmp_path / "tiny_0.npy"))
    assert read_array(tmp_path / "tiny_0_ortho.png").shape[1] >= 512
    side = json.loads((tmp_path / "tiny_1.json").read_text())
    assert (side["seed"], side["shape"], side["steps"], side["n_harmonize"], side["method"]) == (1, [8, 8, 8], 3, 2, "ddpm")
    assert side["nfe"] == 5 and side["seconds"] > 0 and side["periodic"] is False
    assert side["models"]["yz"]["sha256"] and side["models"]["xy"]["path"] == str(ckpt)
    assert side["schedule"]["T"] == 1000 and side["versions"]["torch"]


def test_resume_skips_finished_volumes_and_overwrite_redoes(ckpt, tmp_path):
    assert run(ckpt, "-o", tmp_path, *FAST).exit_code == 0
    mtime = (tmp_path / "tiny_0.json").stat().st_mtime_ns
    res = run(ckpt, "--count", 2, "-o", tmp_path, *FAST)
    assert "skip tiny_0.json" in res.output and (tmp_path / "tiny_1.tif").exists()
    assert (tmp_path / "tiny_0.json").stat().st_mtime_ns == mtime
    assert run(ckpt, "-o", tmp_path, "--overwrite", *FAST).exit_code == 0
    assert (tmp_path / "tiny_0.json").stat().st_mtime_ns != mtime


def test_ranks_shard_volumes_with_rank_independent_content(ckpt, tmp_path, monkeypatch):
    assert run(ckpt, "--count", 3, "-o", tmp_path / "one", "--format", "npy", *FAST).exit_code == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(ckpt, "--count", 3, "-o", tmp_path / "two", "--format", "npy", *FAST).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "two").glob("*.npy")) == ["tiny_1.npy"]
    assert np.array_equal(np.load(tmp_path / "one/tiny_1.npy"), np.load(tmp_path / "two/tiny_1.npy"))


def test_per_plane_models_and_non_cubic_shape(ckpt, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(ckpt.read_bytes())
    res = run("--models", f"yz={ckpt},xz={other}", "--models", f"xy={ckpt}", "--shape", 4, 8, 12, "-o", tmp_path,
              "--stem", "aniso", *FAST)
    assert res.exit_code == 0, res.output
    assert tifffile.imread(tmp_path / "aniso_0.tif").shape == (4, 8, 12)
    side = json.loads((tmp_path / "aniso_0.json").read_text())
    assert side["models"]["xz"]["path"] == str(other) and side["models"]["yz"]["path"] == str(ckpt)


@pytest.mark.parametrize("args", [
    ["missing.safetensors"],
    ["no_such_model"],
    ["CORRUPT"],
    ["CKPT", "--size", 10],
    ["CKPT", "--count", 0],
    ["CKPT", "--count", -2],
    ["CKPT", "-o", "FILE/out"],
    ["CKPT", "--models", "ab=x"],
    ["CKPT", "--models", "yz"],
    ["--models", "yz=CKPT"],
    ["CKPT", "--steps", 0],
])
def test_bad_inputs_one_line_exit_2(ckpt, tmp_path, args):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    (tmp_path / "file").write_text("")
    sub = {"CKPT": str(ckpt), "CORRUPT": str(corrupt), "FILE/out": str(tmp_path / "file" / "out"),
           "yz=CKPT": f"yz={ckpt}"}
    res = run("-o", tmp_path / "out", *[sub.get(str(a), a) for a in args])  # a later -o wins
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("Error: "), res.output


def test_interrupt_mid_run_leaves_no_partial_file(ckpt, tmp_path, monkeypatch):
    real = sampler.sample_volume

    def interrupted(*args, callback, **kwargs):
        def cb(rec):
            callback(rec)
            if rec.index == 1:
                raise KeyboardInterrupt
        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(sampler, "sample_volume", interrupted)
    res = run(ckpt, "-o", tmp_path, *FAST)
    assert res.exit_code == 130 and list(tmp_path.iterdir()) == []


def test_interrupt_while_writing_leaves_no_partial_file(ckpt, tmp_path, monkeypatch):
    def half_written(path, arr, **kwargs):
        open(path, "wb").write(b"II*\0partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", half_written)
    res = run(ckpt, "-o", tmp_path, *FAST)
    assert res.exit_code == 130 and list(tmp_path.iterdir()) == []


def test_volume_fraction_option(ckpt, tmp_path):
    """Numbers steer each volume's phi; 'auto' is off for a checkpoint without recorded fractions; bad values: exit 2."""
    res = run(ckpt, "-o", tmp_path / "a", "--size", 16, "--volume-fraction", "0.3", "--threads", 1, *FAST)
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "a" / "tiny_0.json").read_text())
    assert side["volume_fraction"] == [0.3] and side["threads"] == 1
    assert abs((tifffile.imread(tmp_path / "a" / "tiny_0.tif") > 0).mean() - 0.3) < 0.02
    assert run(ckpt, "-o", tmp_path / "b", *FAST).exit_code == 0
    assert json.loads((tmp_path / "b" / "tiny_0.json").read_text())["volume_fraction"] is None
    for bad in ("data", "1.5", "0.2,0.3", "x", "nan"):
        res = run(ckpt, "-o", tmp_path / "c", "--volume-fraction", bad, *FAST)
        assert res.exit_code == 2 and "Traceback" not in res.output, (bad, res.output)
        assert not (tmp_path / "c" / "tiny_0.tif").exists()
    assert run(ckpt, "-o", tmp_path / "c", "--threads", 0, *FAST).exit_code == 2
