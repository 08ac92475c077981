"""Anchored reconstruction: closed-form oracles (DESIGN.md 1.5), exact anchors, phase mapping, clear errors."""
import numpy as np
import pytest
import torch

from micro3diff import api
from micro3diff.anchors import (Anchor, Anchors, anchors_from, parse_anchor, parse_stack, point_estimate,
                                stack_anchors, to_labels)
from micro3diff.errors import UserError
from micro3diff.diffusion.sampler import iter_sample_volume, sample_volume
from micro3diff.diffusion.settings import SamplerSettings
from test_sampler import SCHEDULE, ConstantOracle, GaussianOracle

BINARY = {"phases": 2, "threshold": None}


def pattern(h: int, w: int, k: int = 3) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % k == 0).astype(np.uint8)


@pytest.mark.parametrize("shape, n_h", [((16, 16, 16), 2), ((8, 12, 16), 1), ((8, 12, 16), 3)])
def test_iid_gaussian_free_voxels_unchanged_and_anchors_exact(shape, n_h):
    """i.i.d. data: the exact denoiser acts voxel by voxel, so anchoring must leave every free voxel as the
    unanchored run made it (same seed: the same bits), and the anchored voxels end exactly at +-1."""
    truth = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.3).numpy().astype(np.uint8)
    anchors = Anchors([Anchor("x", 1, truth[1]), Anchor("y", shape[1] - 1, truth[:, -1]),
                       Anchor("z", 0, truth[:, :, 0])], shape, 1)
    kw = dict(steps=20, n_harmonize=n_h, seed=4)
    free = sample_volume(GaussianOracle(0.5), SCHEDULE, shape, 2, **kw).volume[:, 0]
    out = sample_volume(GaussianOracle(0.5), SCHEDULE, shape, 2, anchors=anchors, **kw).volume[:, 0]
    m = anchors.mask
    assert torch.equal(out[:, ~m], free[:, ~m])
    assert torch.equal(out[:, m], anchors.known[0][m].expand(2, -1))
    assert 0 < anchors.fraction < 1


def test_constant_image_model_fills_the_volume_with_the_anchors_constant():
    """Constant images: every slice in every plane is constant, so one anchored face fixes the whole volume.
    Harmonization is what carries the anchor inward (RePaint): more passes, closer."""
    shape = (8, 8, 8)
    anchors = Anchors([Anchor("x", 0, np.ones((8, 8), np.uint8))], shape, 1)
    dev = {n_h: (sample_volume(ConstantOracle(1.0), SCHEDULE, shape, 2, steps=100, n_harmonize=n_h, seed=3,
                               anchors=anchors).volume - 1).abs().max().item() for n_h in (1, 10)}
    assert dev[10] < 0.05, dev
    assert dev[1] > 2 * dev[10], dev


def test_sections_skip_their_plane_and_still_carry_the_anchors():
    """Sections along x: no yz call (n_h 1: a record's plane is its one call's); the constant-image sections
    still fill the volume, anchors exact. One face, anchors along two axes, or skip_parallel=False: every plane."""
    shape = (8, 8, 8)
    sections = Anchors([Anchor("x", i, np.ones((8, 8), np.uint8)) for i in (0, 7)], shape, 1)
    assert sections.skip == "yz"
    assert Anchors([Anchor("x", 0, pattern(8, 8))], shape, 1).skip is None
    assert Anchors([Anchor("x", i, pattern(8, 8)) for i in (0, 4)], shape, 1, skip_parallel=False).skip is None
    planes = [r.plane for r in iter_sample_volume(ConstantOracle(1.0), SCHEDULE, shape, 1, SamplerSettings.make(
        steps=30, n_harmonize=1, seed=3, anchors=sections))]
    assert set(planes) == {"xz", "xy"} and planes[:4] in (["xz", "xy", "xz", "xy"], ["xy", "xz", "xy", "xz"])
    out = sample_volume(ConstantOracle(1.0), SCHEDULE, shape, 2, steps=100, n_harmonize=10, seed=3, anchors=sections)
    assert (out.volume - 1).abs().max().item() < 0.05
    assert torch.equal(out.volume[:, 0, [0, 7]], torch.ones(2, 2, 8, 8))
    two = Anchors([Anchor("x", 0, pattern(8, 8)), Anchor("z", 0, pattern(8, 8))], shape, 1)
    assert two.skip is None
    planes = [r.plane for r in iter_sample_volume(GaussianOracle(0.5), SCHEDULE, shape, 1, SamplerSettings.make(
        steps=6, n_harmonize=1, anchors=two))]
    assert planes == ["yz", "xz", "xy", "yz", "xz", "xy"]


def test_phase_fractions_of_the_anchored_voxels():
    a = Anchors([Anchor("x", 0, pattern(4, 4, 4)), Anchor("x", 2, np.ones((4, 4), np.uint8))], (4, 4, 4), 1)
    assert a.phase_fractions == [pytest.approx((4 + 16) / 32)]
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    assert Anchors([Anchor("z", 1, labels)], (2, 2, 2), 3).phase_fractions == pytest.approx([0.25, 0.25, 0.5])


def test_point_estimate_ranks_voxels_by_their_share_at_the_fraction():
    """Shares k/4 of 4 realizations: the estimate takes the highest shares first, exactly round(phi n) voxels;
    at phi = the fraction of shares > 1/2 it is the majority vote; equal shares go to the voxel whose
    neighbourhood is more often phase 1."""
    rng = np.random.default_rng(0)
    share = rng.integers(0, 5, (6, 6, 6))
    real = torch.from_numpy((np.arange(4)[:, None, None, None] < share[None]).astype(np.uint8))
    majority = (share > 2).astype(np.uint8)
    assert np.array_equal(point_estimate(real, majority.mean()).numpy(), majority)
    for phi in (0.1, 0.37, 0.8):
        est = point_estimate(real, phi).numpy().astype(bool)
        assert est.sum() == round(phi * share.size)
        assert share[est].min() >= share[~est].max()
    tie = torch.zeros(3, 5, 5, 5, dtype=torch.uint8)
    tie[:, 2:5, 2:5, 2:5] = 1
    tie[2, 3, 3, 3], tie[:2, 1, 1, 1] = 0, 1  # two voxels at share 2/3, (3, 3, 3) amid 26 at share 1
    est = point_estimate(tie, 27 / 125)
    assert est[3, 3, 3] == 1 and est[1, 1, 1] == 0
    with pytest.raises(UserError, match="two-phase"):
        point_estimate(torch.full((2, 4, 4, 4), 2, dtype=torch.uint8), 0.5)


def test_anchored_volume_does_not_depend_on_the_batch():
    shape = (8, 8, 8)
    anchors = Anchors([Anchor("z", 3, pattern(8, 8))], shape, 1)
    kw = dict(steps=6, n_harmonize=2, anchors=anchors)
    both = sample_volume(GaussianOracle(0.5), SCHEDULE, shape, 2, seed=10, **kw).volume
    second = sample_volume(GaussianOracle(0.5), SCHEDULE, shape, 1, seed=11, **kw).volume
    assert torch.equal(both[1], second[0])


def test_multiphase_anchor_one_hot():
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    a = Anchors([Anchor("x", 0, labels)], (2, 2, 2), 3)
    assert a.known.shape == (3, 2, 2, 2)
    assert torch.equal(a.known[:, 0].argmax(0), torch.from_numpy(labels).long())
    assert set(a.known[:, 0].unique().tolist()) == {-1.0, 1.0}


def test_labels_follow_the_training_rules():
    img = np.array([[0, 255], [255, 0]], np.uint8)
    assert to_labels(img, BINARY).tolist() == [[0, 1], [1, 0]]
    grey = np.array([[10.0, 200.0], [90.0, 120.0]])
    assert to_labels(grey, {"phases": 2, "threshold": 100.0}).tolist() == [[0, 1], [0, 1]]
    with pytest.raises(UserError, match="not a two-phase image"):
        to_labels(grey, BINARY)
    data3 = {"phases": 3, "phase_values": [0, 7, 9]}
    assert to_labels(np.array([[9, 0], [7, 7]]), data3).tolist() == [[2, 0], [1, 1]]
    with pytest.raises(UserError, match="none of the model's phase values"):
        to_labels(np.array([[9, 3]]), data3)


def test_stack_of_sections_every_k():
    stack = np.stack([pattern(6, 6, k) for k in (2, 3, 4)])
    got = stack_anchors("y", stack * 255, 4, BINARY, start=1)
    assert [(a.axis, a.index) for a in got] == [("y", 1), ("y", 5), ("y", 9)]
    assert np.array_equal(got[2].labels, pattern(6, 6, 4))
    with pytest.raises(UserError, match="outside the volume"):
        Anchors(got, (6, 8, 6), 1)


def test_specs_parse():
    assert parse_anchor("z=12:a/b:c.tif") == ("z", 12, "a/b:c.tif")
    assert parse_stack("x:sections.tif") == ("x", "sections.tif")
    for bad in ("q=1:f.tif", "x=1", "x:f.tif", "x=a:f.tif", "x=1:"):
        with pytest.raises(UserError, match="bad --anchor"):
            parse_anchor(bad)
    for bad in ("x", "w:f.tif", "x:"):
        with pytest.raises(UserError, match="bad --anchors"):
            parse_stack(bad)


@pytest.mark.parametrize("anchors, match", [
    ([Anchor("x", 0, pattern(4, 5))], "slice of the 8x8x8 volume at fixed x is 8x8"),
    ([Anchor("z", 8, pattern(8, 8))], "outside the volume"),
    ([Anchor("x", -1, pattern(8, 8))], "outside the volume"),
    ([Anchor("x", 0, pattern(8, 8) * 2)], "has phase 2; the model has 2"),
    ([Anchor("x", 0, pattern(8, 8)), Anchor("y", 0, 1 - pattern(8, 8))], "disagrees with another anchor"),
    ([Anchor("t", 0, pattern(8, 8))], "axis must be one of"),
    ([], "no anchors"),
])
def test_bad_anchors_raise_user_error(anchors, match):
    with pytest.raises(UserError, match=match):
        Anchors(anchors, (8, 8, 8), 1)


def test_volume_and_anchor_shapes_must_agree():
    anchors = Anchors([Anchor("x", 0, pattern(8, 8))], (8, 8, 8), 1)
    with pytest.raises(UserError, match="anchors are for a"):
        sample_volume(GaussianOracle(0.5), SCHEDULE, (8, 8, 12), steps=2, n_harmonize=1, anchors=anchors)
    with pytest.raises(UserError, match="one 2D slice"):
        anchors_from([("x", 0, np.zeros((2, 8, 8), np.uint8))], BINARY)


def test_api_sample_holds_anchor_files_exactly(tmp_path):
    """The shipped model, a face read from a 0/255 TIFF and an in-memory section: both come back bit for bit."""
    face = pattern(16, 16, 7)
    api.save(tmp_path / "face.tif", face)
    section = pattern(16, 16, 3)
    section[0] = face[:, 5]  # agrees with the face where they cross (x = 0, z = 5)
    vols = api.sample("spheres", 16, n=2, steps=3, n_harmonize=1, seed=2,
                      anchors=[("x", 0, tmp_path / "face.tif"), ("z", 5, section)])
    assert np.array_equal(vols[:, 0], np.broadcast_to(face, (2, 16, 16)))
    assert np.array_equal(vols[:, :, :, 5], np.broadcast_to(section, (2, 16, 16)))
    with pytest.raises(UserError, match="needs anchors"):
        api.sample("spheres", 16, steps=2, n_harmonize=1, volume_fraction="anchors")


def cli(*args):
    from click.testing import CliRunner

    from micro3diff.cli import main

    return CliRunner().invoke(main, ["sample", *map(str, args)])


def test_cli_face_and_sections_exact_and_recorded(ckpt, tmp_path):
    """m3d sample --anchor x=0:face.tif --anchors z:sections.tif --every 4 on the 8^3 test model."""
    import json

    rng = np.random.default_rng(0)
    truth = (rng.random((8, 8, 8)) < 0.4).astype(np.uint8)
    api.save(tmp_path / "face.tif", truth[0])
    np.save(tmp_path / "sections.npy", np.moveaxis(truth[:, :, ::4], 2, 0))  # (2, D, H): z = 0, 4
    res = cli(ckpt, "--anchor", f"x=0:{tmp_path / 'face.tif'}", "--anchors", f"z:{tmp_path / 'sections.npy'}",
              "--every", 4, "--steps", 3, "--harmonize", 2, "--format", "npy", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    vol = np.load(tmp_path / "out" / "tiny_0.npy")
    assert np.array_equal(vol[0], truth[0]) and np.array_equal(vol[:, :, ::4], truth[:, :, ::4])
    side = json.loads((tmp_path / "out" / "tiny_0.json").read_text())
    assert [(a["axis"], a["index"]) for a in side["anchors"]] == [("x", 0), ("z", 0), ("z", 4)]
    again = cli(ckpt, "--anchor", f"x=0:{tmp_path / 'face.tif'}", "--steps", 3, "--harmonize", 2,
                "--format", "npy", "-o", tmp_path / "out")
    assert again.exit_code == 2 and "other settings (anchors was" in again.output


def test_cli_estimate_and_anchors_volume_fraction(ckpt, tmp_path):
    """--estimate writes <stem>_estimate (+ sidecar) from the COUNT volumes, anchors exact, at the anchors' phase
    fraction; --volume-fraction anchors steers to it (recorded); a rerun reads the volumes back, same estimate."""
    import json

    face = pattern(8, 8, 3)
    api.save(tmp_path / "face.tif", face)
    args = ["--anchor", f"x=0:{tmp_path / 'face.tif'}", "--volume-fraction", "anchors", "--count", 3, "--estimate",
            "--steps", 3, "--harmonize", 1, "--format", "npy", "-o", tmp_path / "out"]
    res = cli(ckpt, *args)
    assert res.exit_code == 0, res.output
    est = np.load(tmp_path / "out" / "tiny_estimate.npy")
    vols = np.stack([np.load(tmp_path / "out" / f"tiny_{i}.npy") for i in range(3)])
    assert np.array_equal(est[0], face) and est.sum() == round(face.mean() * est.size)
    assert np.array_equal(est, point_estimate(torch.from_numpy(vols), face.mean()).numpy())
    side = json.loads((tmp_path / "out" / "tiny_estimate.json").read_text())
    assert side["volumes"] == ["tiny_0", "tiny_1", "tiny_2"] and side["phase_fraction"] == pytest.approx(face.mean())
    assert json.loads((tmp_path / "out" / "tiny_0.json").read_text())["volume_fraction"] == [pytest.approx(face.mean())]
    (tmp_path / "out" / "tiny_estimate.npy").unlink()
    again = cli(ckpt, *args)
    assert again.exit_code == 0 and "skip tiny_0.json" in again.output, again.output
    assert np.array_equal(np.load(tmp_path / "out" / "tiny_estimate.npy"), est)


@pytest.mark.parametrize("extra, match", [
    (["--estimate", "--count", "3"], "--estimate needs --anchor or --anchors"),
    (["--volume-fraction", "anchors"], "--volume-fraction anchors needs --anchor or --anchors"),
    (["--estimate", "--count", "2", "--anchor", "x=0:{d}/face.tif"], "--estimate needs --count >= 3"),
    (["--every", "4"], "go together"),
    (["--anchors", "z:{d}/face.tif"], "go together"),
    (["--anchor", "x=0:{d}/missing.tif"], "missing.tif"),
    (["--anchor", "y=2:{d}/small.npy"], "is 4x4, but a slice of the 8x8x8 volume at fixed y is 8x8"),
    (["--anchor", "x=9:{d}/face.tif"], "outside the volume"),
    (["--anchor", "x=0:{d}/grey.npy"], "not a two-phase image"),
    (["--anchor", "w=0:{d}/face.tif"], "bad --anchor"),
])
def test_cli_bad_anchors_one_line_exit_2(ckpt, tmp_path, extra, match):
    api.save(tmp_path / "face.tif", pattern(8, 8))
    np.save(tmp_path / "small.npy", pattern(4, 4))
    np.save(tmp_path / "grey.npy", np.linspace(0, 1, 64).reshape(8, 8))
    res = cli(ckpt, *[e.format(d=tmp_path) for e in extra], "--steps", 2, "--harmonize", 1, "-o", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert match in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
