"""Bad input never gives a traceback or a silent wrong result (issue 15): a table of bad inputs across every
command (exit 2, one ``Error:`` line, no output file), a Hypothesis fuzz of checkpoint headers, and one test
per input that used to be accepted silently."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from micro3diff.cli import main
from micro3diff.io.checkpoint import read_config
from micro3diff.io.files import write_json
from micro3diff.training.config import make_config
from micro3diff.training.data import DataConfig

pytestmark = pytest.mark.usefixtures("one_thread")

S = ["--size", "8", "--steps", "1", "--harmonize", "1"]
TRAIN = ["--preset", "tiny", "--image-size", "8", "--batch", "2", "--steps", "1", "--no-progress", "--device", "cpu"]


def m3d(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_clean_error(res, out_dir):
    """Exit 2, exactly one ``Error:`` line (the last), no traceback, no file under ``out_dir``."""
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and lines[-1].startswith("Error: "), res.output
    assert sum(line.startswith("Error") for line in lines) == 1, res.output
    assert not [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else True, list(out_dir.rglob("*"))


def write_ckpt(src, dst, header=None, tensors=None):
    """Copy checkpoint ``src`` to ``dst`` with header(cfg) -> cfg (or a raw string) and tensors(dict) -> dict."""
    cfg, weights = read_config(src), load_file(str(src))
    meta = header(cfg) if header else cfg
    save_file(tensors(weights) if tensors else weights, str(dst),
              metadata={"micro3diff": meta if isinstance(meta, str) else json.dumps(meta)})
    return dst


def edit(section, field, value):
    def change(cfg):
        if field is None:
            cfg[section] = value
        else:
            cfg.setdefault(section, {})[field] = value
        return cfg
    return change


def nan_weights(w):
    w = dict(w)
    key = next(iter(w))
    w[key] = w[key].clone().fill_(float("nan"))
    return w


CORRUPT = {
    "list": lambda cfg: "[1, 2]",
    "notjson": lambda cfg: "{",
    "format": edit("format", None, "other/1"),
    "unet_null": edit("unet", None, None),
    "unet_list": edit("unet", None, [1, 2]),
    "schedule_null": edit("schedule", None, None),
    "data_list": edit("data", None, [1]),
    "image_size_abc": edit("data", "image_size", "abc"),
    "beta0": lambda cfg: edit("schedule", "beta_end", 0)(edit("schedule", "beta_start", 0)(cfg)),
    "T_huge": edit("schedule", "T", 1e13),
    "T_str": edit("schedule", "T", "1000"),
    "T_int_huge": edit("schedule", "T", 10**6),
    "kind": edit("schedule", "kind", "bogus"),
    "prediction": edit("schedule", "prediction", 5),
    "dim_mults": edit("unet", "dim_mults", "abc"),
    "attention": edit("unet", "attention", [1, 0, 0]),
    "channels0": edit("unet", "channels", 0),
    "dim_neg": edit("unet", "dim", -16),
    "dim_other": edit("unet", "dim", 32),
    "unknown_field": edit("schedule", "speed", 1),
    "x_mean_nan": edit("data", "x_mean", [float("nan")]),
    "x_var_str": edit("data", "x_var", ["a"]),
    "x_mean_len": edit("data", "x_mean", [0.0, 0.0]),
}


@pytest.fixture
def files(ckpt, tmp_path):
    """Inputs under tmp_path/in: corrupt checkpoints (BAD_<name>) and training images; outputs go to tmp_path/out."""
    src = tmp_path / "in"
    src.mkdir()
    sub = {"CKPT": str(ckpt), "OUT": str(tmp_path / "out")}
    for name, header in CORRUPT.items():
        sub[f"BAD_{name}"] = str(write_ckpt(ckpt, src / f"{name}.safetensors", header))
    sub["BAD_nanweights"] = str(write_ckpt(ckpt, src / "nanw.safetensors", tensors=nan_weights))
    sub["BAD_missing"] = str(write_ckpt(ckpt, src / "missing.safetensors",
                                        tensors=lambda w: dict(list(w.items())[1:])))
    rng = np.random.default_rng(0)
    images = {"BIN": (rng.random((16, 16)) < 0.4).astype(np.uint8), "NAN": np.full((16, 16), np.nan),
              "INF": np.array([[0, 1, 2, np.inf]] * 16, float).repeat(4, 1),
              "COMPLEX": (rng.random((16, 16)) < 0.4) + 1j, "CONST": np.ones((16, 16), np.uint8)}
    for name, arr in images.items():
        np.save(src / f"{name}.npy", arr)
        sub[name] = str(src / f"{name}.npy")
    run = src / "run"
    run.mkdir()
    (run / "latest.json").write_text("[1, 2]")
    config = make_config(DataConfig(paths=(sub["BIN"],), image_size=8), "tiny", batch=2, steps=1)
    write_json(run / "config.json", {"train": config})
    sub["RUN"] = str(run)
    return sub


def _bad(*args):
    return list(args)


SAMPLE = [_bad("sample", f"BAD_{name}", *S, "-o", "OUT") for name in [*CORRUPT, "nanweights", "missing"]] + [
    _bad("sample", "BAD_image_size_abc", "--steps", "1", "--harmonize", "1", "-o", "OUT"),
    _bad("sample", "CKPT", "--size", "0", "-o", "OUT"),
    _bad("sample", "CKPT", "--size", "-8", "-o", "OUT"),
    _bad("sample", "CKPT", "--size", "4096", "--steps", "1", "-o", "OUT"),
    _bad("sample", "CKPT", "--size", "100000", "--steps", "1", "-o", "OUT"),
    _bad("sample", "CKPT", "--shape", "8", "8", "0", "--steps", "1", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--method", "ddim", "--eta", "nan", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--method", "ddim", "--eta", "inf", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--method", "ddim", "--eta", "-1", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--stem", "../../escape", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--stem", "a/b", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--seed", "-1", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--max-batch", "0", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--threads", "0", "-o", "OUT"),
    _bad("sample", "CKPT", *S, "--size", "abc", "-o", "OUT"),
]
SAMPLE2D = [
    _bad("sample2d", "CKPT", "--size", "0", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "CKPT", "-n", "0", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "CKPT", "-n", "10000000", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "CKPT", "--size", "100000", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "CKPT", "--seed", "-1", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "CKPT", "--steps", "1", "-o", "OUT/a.txt"),
    _bad("sample2d", "BAD_list", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "BAD_unet_null", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "BAD_nanweights", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "BAD_T_huge", "--steps", "1", "-o", "OUT/a.npy"),
    _bad("sample2d", "BAD_x_mean_nan", "--prior", "data", "--steps", "1", "-o", "OUT/a.npy"),
]
SYNTH = [_bad("synth", "spheres", *args, "-o", "OUT/a.npy") for args in [
    ["--size", "100000"], ["--size", "32", "--seed", "-1"], ["--size", "0"], ["--shape", "0,8,8"],
    ["--size", "16", "--volume-fraction", "nan"], ["--count", "0"], ["--size", "16", "--diameter", "abc"],
    ["--size", "16", "--diameter", "inf"], ["--shape", "100000,100000,100000"],
]] + [
    _bad("synth", "overlapping-spheres", "--size", "16", "--radius", "nan", "-o", "OUT/a.npy"),
    _bad("synth", "polycrystal", "--count", "100000000", "-o", "OUT/a.npy"),
    _bad("synth", "spheres", "--size", "16", "-o", "OUT/a.txt"),
]
TRAIN_BAD = [_bad("train", data, *TRAIN, *args, "-o", "OUT/run") for data, args in [
    ("BIN", ["--lr", "nan"]), ("BIN", ["--lr", "0"]), ("BIN", ["--lr", "inf"]), ("BIN", ["--model-dim", "0"]),
    ("BIN", ["--model-dim", "-8"]), ("BIN", ["--sample-every", "-1"]), ("BIN", ["--threads", "0"]),
    ("BIN", ["--ema", "nan"]), ("BIN", ["--seed", "-1"]), ("BIN", ["--warmup", "-1"]),
    ("BIN", ["--batch", "100000000"]), ("NAN", ["--threshold", "0.5"]), ("INF", ["--phases", "3"]), ("COMPLEX", []), ("CONST", []),
]] + [_bad("train", "--resume", "-o", "RUN", "--no-progress", "--device", "cpu")]
EVALUATE = [_bad("evaluate", "BIN", "--reference", "BIN", *args, "-o", "OUT/rep") for args in [
    ["--r-max", "0"], ["--r-max", "-1"], ["--crops", "0"], ["--blocks", "1"], ["--threshold", "abc"],
]] + [
    _bad("evaluate", "BIN", "--reference", "OUT/none.npy", "-o", "OUT/rep"),
    _bad("evaluate", "NAN", "--reference", "BIN", "--threshold", "0.5", "-o", "OUT/rep"),
]
CASES = SAMPLE + SAMPLE2D + SYNTH + TRAIN_BAD + EVALUATE


def test_the_table_has_at_least_60_bad_inputs():
    assert len(CASES) >= 60


@pytest.mark.parametrize("args", CASES, ids=[" ".join(a) for a in CASES])
def test_bad_input_is_one_line_exit_2(files, tmp_path, args):
    res = m3d(*[files.get(a, a.replace("OUT", files["OUT"])) for a in args])
    assert_clean_error(res, tmp_path / "out")


def test_bad_ops_env_and_folder_in_the_way(ckpt, tmp_path):
    assert_clean_error(m3d("sample", ckpt, *S, "-o", tmp_path, env={"M3D_OPS": "bogus"}), tmp_path)
    (tmp_path / "tiny_0.tif").mkdir()
    assert_clean_error(m3d("sample", ckpt, *S, "-o", tmp_path), tmp_path)
    (tmp_path / "a.npy").mkdir()
    assert_clean_error(m3d("sample2d", ckpt, "--steps", "1", "-o", tmp_path / "a.npy"), tmp_path)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                max_size=3), max_leaves=6)
FIELDS = [("unet", None), ("schedule", None), ("data", None), ("format", None)] + [
    ("unet", f) for f in ("channels", "dim", "dim_mults", "attention", "num_resnet_blocks", "heads", "groups")] + [
    ("schedule", f) for f in ("kind", "T", "beta_start", "beta_end", "prediction")] + [
    ("data", f) for f in ("image_size", "channels", "x_mean", "x_var")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_fuzzed_header_is_a_clean_run_or_one_line_error(ckpt, tmp_path_factory, field, value):
    folder = tmp_path_factory.mktemp("fuzz")
    bad = write_ckpt(ckpt, folder / "f.safetensors", edit(*field, value))
    out = folder / "out"
    res = m3d("sample2d", bad, "-n", "1", "--size", "8", "--steps", "1", "--prior", "data", "-o", out / "a.npy")
    if res.exit_code == 0:
        assert np.isfinite(np.load(out / "a.npy")).all()
    else:
        assert_clean_error(res, out)


# ---------------------------------------------------------------------------------- once accepted silently

def test_nan_weights_and_nan_x_mean_are_refused_at_load(ckpt, tmp_path):
    nanw = write_ckpt(ckpt, tmp_path / "w.safetensors", tensors=nan_weights)
    nanm = write_ckpt(ckpt, tmp_path / "m.safetensors", edit("data", "x_mean", [float("nan")]))
    out = tmp_path / "out"
    for bad, match in ((nanw, "NaN or infinite weights"), (nanm, "x_mean[0] must be a finite number")):
        res = m3d("sample", bad, *S, "--prior", "data", "-o", out)
        assert_clean_error(res, out)
        assert match in res.output


def test_size_zero_is_an_error_not_the_default(ckpt, tmp_path):
    assert_clean_error(m3d("sample", ckpt, "--size", "0", "-o", tmp_path), tmp_path)
    assert_clean_error(m3d("sample2d", ckpt, "--size", "0", "-o", tmp_path / "a.npy"), tmp_path)


@pytest.mark.parametrize("eta", ["nan", "inf"])
def test_non_finite_eta_is_refused(ckpt, tmp_path, eta):
    assert_clean_error(m3d("sample", ckpt, *S, "--method", "ddim", "--eta", eta, "-o", tmp_path), tmp_path)


def test_rerun_with_other_settings_is_refused_not_skipped(ckpt, tmp_path):
    assert m3d("sample", ckpt, *S, "-o", tmp_path).exit_code == 0
    res = m3d("sample", ckpt, *S, "--seed", "5", "-o", tmp_path)
    assert res.exit_code == 2 and "seed was 0, now 5" in res.output, res.output
    res = m3d("sample", ckpt, *S, "--seed", "5", "--overwrite", "-o", tmp_path)
    assert res.exit_code == 0 and json.loads((tmp_path / "tiny_0.json").read_text())["seed"] == 5
    assert "skip" in m3d("sample", ckpt, *S, "--seed", "5", "-o", tmp_path).output


@pytest.mark.parametrize("name, arr, args", [
    ("nan", np.where(np.eye(16) > 0, np.nan, 0.7), ["--threshold", "0.5"]),
    ("inf", np.array([[0, 1, 2, np.inf]] * 16).repeat(4, 1), ["--phases", "3"]),
    ("complex", np.eye(16) + 0j, []),
    ("constant", np.zeros((16, 16), np.uint8), []),
])
def test_training_data_that_used_to_train(tmp_path, name, arr, args):
    np.save(tmp_path / f"{name}.npy", arr)
    assert_clean_error(m3d("train", tmp_path / f"{name}.npy", *TRAIN, *args, "-o", tmp_path / "run"), tmp_path / "run")


def test_stale_partial_files_are_removed(ckpt, tmp_path):
    stale = tmp_path / ".tiny_0.tif.x1y2.part.tif"
    stale.write_bytes(b"half")
    assert m3d("sample", ckpt, *S, "-o", tmp_path).exit_code == 0
    assert not stale.exists() and (tmp_path / "tiny_0.tif").exists()


def test_stale_partial_files_of_synth_and_evaluate_are_removed(tmp_path):
    stale = [tmp_path / ".a.npy.k3.part.npy", tmp_path / "rep" / ".report.json.z9.part.json"]
    stale[1].parent.mkdir()
    for p in stale:
        p.write_bytes(b"half")
    res = m3d("synth", "spheres", "--size", "24", "--diameter", "6", "--seed", "1", "-o", tmp_path / "a.npy")
    assert res.exit_code == 0, res.output
    vol = tmp_path / "v.npy"
    np.save(vol, (np.random.default_rng(0).random((8, 8, 8)) < 0.4).astype(np.uint8))
    res = m3d("evaluate", vol, "--reference", tmp_path / "a.npy", "--crops", "2", "-o", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in stale) and (tmp_path / "rep" / "report.json").exists()


def test_threads_are_stored_in_the_run(tmp_path):
    np.save(tmp_path / "bin.npy", (np.random.default_rng(0).random((16, 16)) < 0.4).astype(np.uint8))
    res = m3d("train", tmp_path / "bin.npy", *TRAIN, "--threads", "1", "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run/config.json").read_text())["train"]["threads"] == 1


def test_stem_with_a_folder_is_refused(ckpt, tmp_path):
    out = tmp_path / "a" / "b"
    assert_clean_error(m3d("sample", ckpt, *S, "--stem", "../../escape", "-o", out), tmp_path)


def test_negative_sample_every_and_zero_r_max_are_refused(tmp_path):
    np.save(tmp_path / "bin.npy", (np.random.default_rng(0).random((16, 16)) < 0.4).astype(np.uint8))
    out = tmp_path / "out"
    assert_clean_error(m3d("train", tmp_path / "bin.npy", *TRAIN, "--sample-every", "-1", "-o", out), out)
    assert_clean_error(m3d("evaluate", tmp_path / "bin.npy", "-r", tmp_path / "bin.npy", "--r-max", "0", "-o", out),
                       out)


def test_reference_smaller_than_the_samples_is_said_plainly(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gen.npy", (rng.random((32, 32, 32)) < 0.4).astype(np.uint8))
    np.save(tmp_path / "ref.npy", (rng.random((16, 16, 16)) < 0.4).astype(np.uint8))
    res = m3d("evaluate", tmp_path / "gen.npy", "-r", tmp_path / "ref.npy", "--crops", "2", "-o", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "reference (16, 16, 16) is smaller than the generated samples (32, 32, 32)" in res.output


def test_non_finite_volume_is_not_written(ckpt, tmp_path, monkeypatch):
    from micro3diff.diffusion import sampler

    real = sampler.sample_volume

    def poisoned(*args, **kwargs):
        res = real(*args, **kwargs)
        res.volume.fill_(math.nan)
        return res

    monkeypatch.setattr(sampler, "sample_volume", poisoned)
    assert_clean_error(m3d("sample", ckpt, *S, "-o", tmp_path), tmp_path)
