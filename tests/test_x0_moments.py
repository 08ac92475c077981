"""x0-hat moments (diffusion.x0_moments) against analytic oracles, the variance rule of the volume-fraction
control, and their life in checkpoints: measured by m3d train, added by m3d calibrate, checked on load."""
import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from test_schedule import BinaryOracle, GaussianOracle
from micro3diff.cli import main
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import DEFAULT_SCHEDULE, PAPER_SCHEDULE, NoiseSchedule, Predictor
from micro3diff.diffusion.volume_fraction import steer
from micro3diff.diffusion.x0_moments import X0Moments, measure
from micro3diff.errors import UserError
from micro3diff.io.checkpoint import load_checkpoint, read_safetensors, write_safetensors


@pytest.mark.parametrize("config", [DEFAULT_SCHEDULE, PAPER_SCHEDULE], ids=["zsnr-v", "paper-eps"])
def test_measure_matches_the_gaussian_oracle(config):
    """i.i.d. N(0, s^2) pixels: x0-hat = k x_t, so var(x0-hat) = ab s^4 / (ab s^2 + 1 - ab), mean 0."""
    sched, s = NoiseSchedule(config), 0.8
    m = measure(GaussianOracle(sched, s), sched, s * torch.randn(64, 1, 16, 16), points=12)
    assert len(m.t) == 12 and m.t[0] == 0 and m.t[-1] == sched.T - 1
    for t, (mean,), (var,) in zip(m.t, m.mean, m.var):
        ab = float(sched.alphabar[t])
        want = ab * s**4 / (ab * s * s + 1 - ab)
        assert abs(var - want) <= 0.05 * want + 1e-3, (t, var, want)
        assert abs(mean) <= 0.02 + 3 * math.sqrt(want / 16384)


def test_measure_binary_oracle_mean_is_the_phase_fraction():
    """Law of total expectation: E[x0-hat] = E[x0] = 2p - 1 at every noise level."""
    sched, p = NoiseSchedule(DEFAULT_SCHEDULE), 0.2
    x0 = (torch.rand(64, 1, 16, 16) < p).float() * 2 - 1
    m = measure(BinaryOracle(sched, p), sched, x0, points=8)
    assert all(abs(mean - (2 * p - 1)) < 0.03 for (mean,) in m.mean), m.mean
    assert m.var[0][0] == pytest.approx(4 * p * (1 - p), abs=0.05)  # t = 0: x0-hat = x0
    assert m.var[-1][0] < 1e-6  # alphabar_T = 0: x0-hat is the constant prior mean


def test_interpolation_and_dict_round_trip():
    m = X0Moments((0, 10, 30), ((0.0,), (1.0,), (3.0,)), ((1.0,), (0.5,), (0.1,)), ((0.2,), (0.1,), (0.0,)), 4, 8)
    assert m.at(10, "mean").item() == 1.0 and m.at(20, "mean").item() == pytest.approx(2.0)
    assert m.at(20).item() == pytest.approx(0.3) and m.at(20, "fraction").item() == pytest.approx(0.05)
    assert m.at(-5, "mean").item() == 0.0 and m.at(99, "var").item() == pytest.approx(0.1)
    assert X0Moments.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_steer_sets_the_variance_then_the_fraction():
    pr = Predictor.at(0.3, "v")
    x, pred = torch.randn(2, 8, 1, 8, 8), torch.randn(2, 8, 1, 8, 8)
    out = steer(x, pred, pr, [0.2], torch.tensor([0.49]))
    x0 = (pr.a_x * x - pr.a_p * out).reshape(2, -1)
    assert torch.allclose(x0.var(1), torch.full((2,), 0.49), rtol=1e-4)
    assert torch.allclose((x0 > 0).float().mean(1), torch.full((2,), 0.2), atol=1 / 512)
    own = (pr.a_x * x - pr.a_p * pred).reshape(2, -1).var(1)  # a volume's own variance: the shift alone
    for v in range(2):
        same = steer(x[v:v + 1], pred[v:v + 1], pr, [0.2], own[v:v + 1])
        assert torch.allclose(same, steer(x[v:v + 1], pred[v:v + 1], pr, [0.2]), atol=1e-5)


def test_sampler_with_moments_hits_the_target_on_the_gaussian_oracle():
    """The variance rule with the oracle's own measured moments: every volume still gets phi exactly."""
    sched, s = NoiseSchedule(DEFAULT_SCHEDULE), 0.5
    oracle = GaussianOracle(sched, s)
    m = measure(oracle, sched, s * torch.randn(64, 1, 16, 16), points=16)
    res = sample_volume(oracle, sched, (24, 24, 24), 2, steps=20, n_harmonize=2, seed=1, volume_fraction=[0.2],
                        x0_moments=dict.fromkeys(("yz", "xz", "xy"), m))
    for v in range(2):
        assert abs(res.phases[v].float().mean().item() - 0.2) < 0.002


def test_calibrate_cli_adds_moments_and_keeps_the_weights(tmp_path, ckpt):
    import numpy as np

    data = tmp_path / "img.npy"
    np.save(data, (np.random.default_rng(0).random((2, 16, 16)) < 0.3).astype(np.uint8))
    out = tmp_path / "calibrated.safetensors"
    r = CliRunner().invoke(main, ["calibrate", str(ckpt), str(data), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    before, after = load_file(str(ckpt)), load_file(str(out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    moments = load_checkpoint(out).x0_moments
    assert moments is not None and len(moments.t) > 10 and moments.size == 8
    assert json.loads((tmp_path / "calibrated.safetensors.json").read_text())["data"]["x0_moments"]["t"]
    for bad in ([str(tmp_path / "missing.npy")], [str(data), "--threshold", "nope"]):
        r = CliRunner().invoke(main, ["calibrate", str(ckpt), *bad, "-o", str(tmp_path / "x.safetensors")])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    three = tmp_path / "three.npy"
    np.save(three, np.random.default_rng(0).integers(0, 3, (2, 16, 16)).astype(np.uint8))
    r = CliRunner().invoke(main, ["calibrate", str(ckpt), str(three), "-o", str(tmp_path / "y.safetensors")])
    assert r.exit_code == 2 and not (tmp_path / "y.safetensors").exists(), r.output


@pytest.mark.parametrize("bad", [{"t": [0, 5], "mean": [[0.1]], "var": [[0.1]]},
                                 {"t": [5, 0], "mean": [[0.1], [0.1]], "var": [[0.1], [0.1]]},
                                 {"t": [0], "mean": [[0.1]], "var": [[-1.0]]},
                                 {"t": [0], "mean": [[0.1, 0.2]], "var": [[0.1, 0.2]]}, "nope"])
def test_corrupt_moments_in_a_header_are_refused(tmp_path, ckpt, bad):
    meta, tensors = read_safetensors(ckpt, "micro3diff", "checkpoint", tensors=True)
    meta["data"]["x0_moments"] = bad
    write_safetensors(tmp_path / "bad.safetensors", tensors, "micro3diff", meta)
    with pytest.raises(UserError, match="x0_moments"):
        load_checkpoint(tmp_path / "bad.safetensors")
