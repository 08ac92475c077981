"""Datasets, the training loop (loss falls, exact resume, checkpoints), 2D sampling and a 2-process DDP run."""
import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import package_env
from micro3diff.diffusion.sample2d import sample_images
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.errors import UserError
from micro3diff.io.checkpoint import load_checkpoint
from micro3diff.io.pictures import image_grid
from micro3diff.phases import otsu_threshold
from micro3diff.training.config import make_config
from micro3diff.training.data import Crop, CropSampler, DataConfig, dihedral, load_training_images
from micro3diff.training.loop import train
from micro3diff.training.run_dir import RunDir
from micro3diff.training.state import load_state

pytestmark = pytest.mark.usefixtures("one_thread")



def binary(shape, seed=0, p=0.4):
    return (np.random.default_rng(seed).random(shape) < p).astype(np.uint8)


def images(tmp_path, arr, name="x.npy", **kw):
    np.save(tmp_path / name, arr)
    return load_training_images(DataConfig(paths=(str(tmp_path / name),), **kw))


# ------------------------------------------------------------------------------------------- sources

@pytest.mark.parametrize("axis, n", [("0", 10), ("1", 12), ("2", 14), ("all", 36)])
def test_volume_slices(tmp_path, axis, n):
    vol = binary((10, 12, 14))
    ds = images(tmp_path, vol, image_size=8, axis=axis, augment=False)
    assert len(ds) == n
    item = n - 1  # the last slice along the last axis used
    a = {"0": 0, "1": 1, "2": 2, "all": 2}[axis]
    # the last slice along axis a, oriented as the sampler shows plane yz / xz / xy: (H, W), (W, D), (D, H)
    last = {0: vol[-1], 1: vol[:, -1, :].T, 2: vol[:, :, -1]}[a]
    expect = last[2:10, 1:9]
    np.testing.assert_array_equal(ds.labels(Crop(item, 2, 1, 0)), expect)
    x = ds[Crop(item, 2, 1, 0)]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(expect).float() * 2 - 1)


def test_folder_stack_and_tiff(tmp_path):
    import tifffile

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(binary((20, 24), seed=i) * 255).save(folder / f"{i}.png")
    tifffile.imwrite(folder / "t.tif", binary((20, 20), seed=9).astype(bool).astype(np.uint8))
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    ds = load_training_images(DataConfig(paths=(str(folder),), image_size=16))
    assert len(ds) == 4 and ds.channels == 1
    np.testing.assert_array_equal(ds.image(0), binary((20, 24), seed=0))
    np.save(tmp_path / "stack.npy", binary((5, 16, 16)).astype(bool))  # (N, H, W) stack of 2D images
    ds = load_training_images(DataConfig(paths=(str(tmp_path / "stack.npy"), str(folder)), image_size=16))
    assert len(ds) == 9
    batch = ds.batch(CropSampler(ds, 6, seed=0).crops(0))
    assert batch.shape == (6, 1, 16, 16) and set(batch.unique().tolist()) <= {-1.0, 1.0}


def test_random_crops_of_a_large_image(tmp_path):
    img = binary((40, 50))
    ds = images(tmp_path, img, image_size=16, augment=False)
    crops = [c for s in range(40) for c in CropSampler(ds, 4, seed=1).crops(s)]
    ys, xs = {c.y for c in crops}, {c.x for c in crops}
    assert min(ys) >= 0 and max(ys) <= 24 and min(xs) >= 0 and max(xs) <= 34
    assert len(ys) > 15 and len(xs) > 20
    for c in crops[:10]:
        assert torch.equal(ds[c][0], torch.from_numpy(img[c.y:c.y + 16, c.x:c.x + 16]).float() * 2 - 1)


def test_dihedral_all_eight_exact(tmp_path):
    img = binary((8, 8), seed=3)
    t = torch.from_numpy(img)
    group = [torch.rot90(m, r, (0, 1)) for m in (t, torch.flip(t, (1,))) for r in range(4)]
    assert len({g.numpy().tobytes() for g in group}) == 8
    assert {dihedral(img, k).tobytes() for k in range(8)} == {g.numpy().tobytes() for g in group}
    ds = images(tmp_path, img, image_size=8)
    seen = {}
    for s in range(20):
        for c, x in zip(CropSampler(ds, 8, seed=0).crops(s), ds.batch(CropSampler(ds, 8, seed=0).crops(s))):
            labels = ((x[0] + 1) / 2).to(torch.uint8)
            assert any(torch.equal(labels, g) for g in group)
            seen[c.k] = labels
    assert sorted(seen) == list(range(8))
    assert len({v.numpy().tobytes() for v in seen.values()}) == 8


@pytest.mark.parametrize("arr", [binary((16, 16)), binary((16, 16)) * 255, binary((16, 16)).astype(bool),
                                 binary((16, 16)).astype(np.float32)])
def test_binary_encodings(tmp_path, arr):
    np.testing.assert_array_equal(images(tmp_path, arr, image_size=16).image(0), binary((16, 16)))


def test_threshold_number_and_otsu(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.where(binary((32, 32)) == 1, rng.normal(180, 15, (32, 32)), rng.normal(60, 15, (32, 32)))
    grey = grey.clip(0, 255).astype(np.uint8)
    # Otsu against brute force over every integer threshold
    v = grey.ravel().astype(float)
    score = [((v <= t).mean() * (v > t).mean() * (v[v <= t].mean() - v[v > t].mean()) ** 2)
             if 0 < (v <= t).sum() < v.size else -1 for t in range(256)]
    assert otsu_threshold(grey) == float(np.argmax(score))
    ds = images(tmp_path, grey, image_size=16, threshold="otsu")
    np.testing.assert_array_equal(ds.image(0), (grey > otsu_threshold(grey)).astype(np.uint8))
    assert ds.checkpoint_data()["otsu_thresholds"] == [otsu_threshold(grey)]
    np.testing.assert_array_equal(images(tmp_path, grey, image_size=16, threshold="100").image(0), grey > 100)


def test_non_binary_and_label_images_refused(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (16, 16))
    with pytest.raises(UserError, match="not binary.*--threshold"):
        images(tmp_path, grey, image_size=16)
    labels = np.random.default_rng(0).integers(0, 3, (16, 16)).astype(np.uint8)
    with pytest.raises(UserError, match="looks like a 3-phase label image.*--phases 3"):
        images(tmp_path, labels, image_size=16)
    with pytest.raises(UserError, match="3 distinct values.*--phases is 4"):
        images(tmp_path, labels, image_size=16, phases=4)
    with pytest.raises(UserError, match="cannot be combined"):
        DataConfig(paths=("x",), phases=3, threshold=0.5)


def test_multiphase_one_hot(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (6, 16, 16))
    ds = images(tmp_path, labels * 10 + 5, image_size=16, phases=3)  # values 5, 15, 25 -> phases 0, 1, 2
    assert ds.channels == 3 and ds.checkpoint_data()["phase_values"] == [5, 15, 25]
    x = ds.batch([Crop(i, 0, 0, 0) for i in range(6)])
    assert x.shape == (6, 3, 16, 16) and set(x.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(x.argmax(1), torch.from_numpy(labels))
    assert torch.all(x.sum(1) == 2 - 3)  # exactly one channel at +1
    moments = ds.checkpoint_data()
    fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
    np.testing.assert_allclose(moments["x_mean"], 2 * fractions - 1)
    np.testing.assert_allclose(moments["x_var"], x.var(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-6)


def test_binary_moments_are_the_data_prior(tmp_path):
    arr = binary((4, 16, 16))
    data = images(tmp_path, arr, image_size=16).checkpoint_data()
    m = 2 * arr.mean() - 1
    assert data["x_mean"] == [pytest.approx(m)] and data["x_var"] == [pytest.approx(1 - m * m)]


def test_sources_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_training_images(DataConfig(paths=(str(tmp_path / "empty"),)))
    with pytest.raises(UserError, match="smaller than the crop size 32"):
        images(tmp_path, binary((20, 40)), image_size=32)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_training_images(DataConfig(paths=(str(tmp_path / "bad.npy"),)))


def test_sampler_deterministic_and_sharded(tmp_path):
    ds = images(tmp_path, binary((10, 16, 16)), image_size=8)
    a, b = CropSampler(ds, 5, seed=7), CropSampler(ds, 5, seed=7)
    assert [a.crops(s) for s in range(6)] == [b.crops(s) for s in range(6)]
    assert a.crops(0) != CropSampler(ds, 5, seed=8).crops(0)
    assert sorted(c.item for s in range(2) for c in a.crops(s)) == list(range(10))  # one epoch = each item once
    shards = [{c.item for s in range(4) for c in CropSampler(ds, 5, seed=0, rank=r, world=2).crops(s)}
              for r in range(2)]
    assert shards == [set(range(0, 10, 2)), set(range(1, 10, 2))]


# ------------------------------------------------------------------------------------------- training

def stripes(tmp_path):
    """Toy data: vertical stripes of period 4 in a 16x64 image (all crops are stripes)."""
    img = np.tile(np.array([1, 1, 0, 0], np.uint8), (16, 16))
    np.save(tmp_path / "stripes.npy", img)
    return DataConfig(paths=(str(tmp_path / "stripes.npy"),), image_size=16)


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_loss_falls(tmp_path):
    cfg = make_config(stripes(tmp_path), "tiny", steps=120, batch=16, lr=2e-3, warmup=10, log_every=1,
                      save_every=1000)
    train(cfg, tmp_path / "run", progress=False)
    loss = [float(r["loss"]) for r in log_rows(tmp_path / "run")]
    assert len(loss) == 120
    first, last = np.mean(loss[:30]), np.mean(loss[-30:])
    assert last < 0.5 * first, (first, last)


def test_channels_last_training_matches_the_reference_loss(tmp_path):
    """The CPU fast path (channels_last) trains the same model: per-step losses within 1e-4 of the reference."""
    cfg = make_config(stripes(tmp_path), "tiny", steps=5, batch=8, warmup=2, log_every=1, save_every=1000)
    train(dataclasses.replace(cfg, channels_last=False), tmp_path / "ref", progress=False)
    train(cfg, tmp_path / "fast", progress=False)
    ref, fast = ([float(r["loss"]) for r in log_rows(tmp_path / d)] for d in ("ref", "fast"))
    assert cfg.channels_last and len(ref) == len(fast) == 5
    assert max(abs(a - b) for a, b in zip(ref, fast)) < 1e-4, (ref, fast)


def test_resume_is_bit_exact_and_checkpoints(tmp_path):
    cfg = make_config(stripes(tmp_path), "tiny", steps=6, batch=4, warmup=3, save_every=2, keep=2, log_every=1)
    train(cfg, tmp_path / "a", progress=False)
    train(dataclasses.replace(cfg, steps=3), tmp_path / "b", progress=False)  # "interrupted" after 3 steps
    stored = RunDir(tmp_path / "b").stored_config()
    assert stored == dataclasses.replace(cfg, steps=3)
    train(dataclasses.replace(stored, steps=6), tmp_path / "b", resume=True, progress=False)
    a, b = (load_file(str(p / "checkpoints/state_0000006.safetensors")) for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {k.split("/")[0] for k in a} == {"model", "ema", "optim", "rng"}
    assert [int(r["step"]) for r in log_rows(tmp_path / "b")] == list(range(1, 7))
    # layout: last `keep` checkpoints, latest pointer, stable copy, state header
    ckpts = sorted(p.name for p in (tmp_path / "a/checkpoints").iterdir())
    assert ckpts == [f"{k}_{s:07d}.safetensors{j}" for k in ("model", "state") for s in (4, 6) for j in ("", ".json")]
    assert RunDir(tmp_path / "a").latest_state() == (6, tmp_path / "a/checkpoints/state_0000006.safetensors")
    _, meta = load_state(tmp_path / "a/checkpoints/state_0000006.safetensors")
    assert meta["step"] == 6 and meta["config"]["steps"] == 6
    ck = load_checkpoint(tmp_path / "a/model.safetensors")
    assert ck.data["image_size"] == 16 and ck.data["scaling"] == "x = 2*I - 1" and ck.training["step"] == 6
    assert all(torch.equal(v, a[f"ema/{k}"]) for k, v in ck.model.state_dict().items())
    # the final model carries its x0-hat moments, the same from an interrupted run; earlier ones do not
    assert ck.x0_moments is not None and ck.x0_moments == load_checkpoint(tmp_path / "b/model.safetensors").x0_moments
    assert load_checkpoint(tmp_path / "a/checkpoints/model_0000004.safetensors").x0_moments is None
    with pytest.raises(UserError, match="already holds a training run"):
        train(cfg, tmp_path / "a", progress=False)


def test_sample_images_deterministic():
    from micro3diff.diffusion.unet import UNET_PRESETS, UNet

    model = UNet(UNET_PRESETS["tiny"]).eval()
    sched = NoiseSchedule()
    a = sample_images(model, sched, 3, 8, steps=5, seed=1)
    assert a.shape == (3, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, sample_images(model, sched, 3, 8, steps=5, seed=1))
    assert not torch.equal(a, sample_images(model, sched, 3, 8, steps=5, seed=2))
    assert image_grid(a, ncol=2).shape == (2 * 10 - 2, 2 * 10 - 2)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    vol = tmp_path / "vol.npy"
    np.save(vol, binary((12, 16, 16)))
    env = package_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--no-python", sys.executable, "-c", "from micro3diff.cli import main; main()",
           "train", str(vol), "--image-size", "16", "--preset", "tiny", "--steps", "4", "--batch", "2",
           "--save-every", "2", "--log-every", "1", "--device", "cpu", "--no-progress", "-o", str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert [int(r["step"]) for r in log_rows(run)] == [1, 2, 3, 4]  # one writer: no duplicated rows
    assert RunDir(run).latest_state()[0] == 4
    tensors, meta = load_state(run / "checkpoints/state_0000004.safetensors")
    assert meta["world_size"] == 2
    assert load_checkpoint(run / "model.safetensors").training["world_size"] == 2
    assert not [p for p in run.rglob("*") if ".part" in p.name]
