"""``m3d train`` / ``m3d sample2d``: user errors are one line with exit 2; kill -9 then --resume is safe."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import package_env
from micro3diff.cli import main
from micro3diff.io.checkpoint import load_checkpoint
from micro3diff.training.run_dir import RunDir
from micro3diff.training.state import load_state

TINY = ["--preset", "tiny", "--image-size", "16", "--batch", "2", "--no-progress", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def binary(shape, seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.4).astype(np.uint8)


def m3d(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, match):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], result.output


def test_train_and_sample2d(tmp_path):
    np.save(tmp_path / "vol.npy", binary((16, 16, 16)))
    r = m3d("train", tmp_path / "vol.npy", "--axis", "all", *TINY, "--steps", "3", "--save-every", "2",
            "--plane", "xy", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(tmp_path / "run/model.safetensors")
    assert ck.data["plane"] == "xy" and ck.data["channels"] == 1 and ck.training["step"] == 3
    r = m3d("train", "--resume", "-o", tmp_path / "run", "--steps", "5", "--no-progress")
    assert r.exit_code == 0, r.output
    assert RunDir(tmp_path / "run").latest_state()[0] == 5
    assert_user_error(m3d("train", "--resume", "-o", tmp_path / "run", "--steps", "2"), "already at step 5")
    assert_user_error(m3d("train", "--resume", "-o", tmp_path / "run", "--lr", "1"), "only --steps")
    r = m3d("sample2d", tmp_path / "run/model.safetensors", "-n", "3", "--steps", "4", "-o", tmp_path / "g.png")
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (34, 34)
    assert json.loads((tmp_path / "g.png.json").read_text())["n"] == 3
    r = m3d("sample2d", tmp_path / "run/model.safetensors", "-n", "2", "--steps", "2", "-o", tmp_path / "s.npy")
    assert r.exit_code == 0 and np.load(tmp_path / "s.npy").shape == (2, 16, 16)


def test_bad_inputs_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(m3d("train", tmp_path / "empty", *TINY, "-o", tmp_path / "r"), "holds no images")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(binary((32, 32)) * 255).save(mixed / "a.png")
    Image.fromarray(binary((12, 40)) * 255).save(mixed / "b.png")
    assert_user_error(m3d("train", mixed, *TINY, "-o", tmp_path / "r"), "smaller than the crop size 16")
    Image.fromarray(binary((32, 32)) * 255).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])  # truncated
    assert_user_error(m3d("train", tmp_path / "bad.png", *TINY, "-o", tmp_path / "r"), "cannot read")
    np.save(tmp_path / "grey.npy", np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8))
    assert_user_error(m3d("train", tmp_path / "grey.npy", *TINY, "-o", tmp_path / "r"), "--threshold")
    np.save(tmp_path / "lab.npy", np.random.default_rng(0).integers(0, 4, (32, 32)))
    assert_user_error(m3d("train", tmp_path / "lab.npy", *TINY, "-o", tmp_path / "r"), "use --phases 4")
    np.save(tmp_path / "small.npy", binary((24, 24)))
    assert_user_error(m3d("train", tmp_path / "small.npy", *TINY, "--image-size", "32", "-o", tmp_path / "r"),
                      "smaller than the crop size 32")
    (tmp_path / "afile").write_text("x")
    assert_user_error(m3d("train", tmp_path / "small.npy", *TINY, "-o", tmp_path / "afile/run"), "not a folder")
    assert_user_error(m3d("train", "--resume", "-o", tmp_path / "none"), "nothing to resume")
    assert_user_error(m3d("train", tmp_path / "missing.npy", *TINY, "-o", tmp_path / "r"), "no such file")
    assert_user_error(m3d("train", tmp_path / "small.npy", *TINY, "--threshold", "high", "-o", tmp_path / "r"),
                      "threshold must be a number")
    assert_user_error(m3d("train", tmp_path / "small.npy", *TINY, "--image-size", "18", "-o", tmp_path / "r"),
                      "must be a multiple of")
    assert_user_error(m3d("sample2d", tmp_path / "nope.safetensors", "-o", tmp_path / "g.png"), "no such checkpoint")


def test_kill_9_then_resume(tmp_path):
    np.save(tmp_path / "img.npy", binary((32, 32)))
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from micro3diff.cli import main; main()", "train", str(tmp_path / "img.npy"),
           *TINY, "--save-every", "3", "--keep", "2", "--log-every", "1", "--steps", "100000", "-o", str(run)]
    env = package_env(OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not ((run / "latest.json").is_file() and RunDir(run).latest_state()[0] >= 9):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    logged = max(int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:])
    files = [p for p in run.rglob("*.safetensors") if not p.name.startswith(".")]
    for p in files:  # every visible checkpoint is complete
        load_state(p) if p.name.startswith("state_") else load_checkpoint(p)
    step, _ = RunDir(run).latest_state()
    assert logged - step <= 3  # at most one checkpoint interval lost
    r = m3d("train", "--resume", "-o", run, "--steps", step + 4)
    assert r.exit_code == 0, r.output
    assert RunDir(run).latest_state()[0] == step + 4
    assert not [p for p in run.rglob("*") if ".part" in p.name]
    rows = [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert rows == list(range(1, step + 5))
