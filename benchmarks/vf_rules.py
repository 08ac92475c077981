"""Ablation of the volume-fraction control's rule (issue 11: why does multi-plane sampling erode a phase?).

The shipped control (``volume_fraction.steer``) shifts each call's x0-hat by the quantile that gives the target
phi. This harness swaps in other rules for one run of ``quality_report.py`` (binary models only) and keeps that
run's rows in benchmarks/results/vf_rules/<rule>/quality.{json,md}:

* ``quantile``: the shipped rule (baseline);
* ``mean``: shift x0-hat to the data mean 2 phi - 1 (the law of total expectation holds at every noise level);
* ``blend``: quantile and mean shifts weighted by x0-hat's explained variance, var(x0-hat) / 4 phi (1 - phi);
* ``moment``: x0-hat moved to the mean and variance that the 2D model's x0-hat has on real 2D crops of the
  training data at the same noise level (calibrated once per respaced step, 48 random 64^2 crops, seed 0);
* ``moment+q``: ``moment``, then the quantile shift (exact phi).

  PYTHONPATH=. python benchmarks/vf_rules.py --rule moment+q --data runs/reproduce/data/spheres.npy -- \
      --cases spheres --settings preview+vf --size 32 --count 4 --threads 1

Everything after ``--`` goes to quality_report.py (its ``--settings`` must include ``vf`` and its preset's steps
must equal ``--steps``, which sets the calibration's steps).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import _bench
import quality_report
import micro3diff.diffusion.sampler as sampler_module
from micro3diff.io.checkpoint import load_checkpoint
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.volume_fraction import _offsets_binary

RULES = ("quantile", "mean", "blend", "moment", "moment+q")


def calibrate(model: str, data: str, steps: int) -> dict[float, tuple[float, float]]:
    """a_x of each respaced step -> (mean, var) of the 2D model's x0-hat on 48 random 64^2 crops of ``data``."""
    ck = load_checkpoint(model, "cpu")
    vol = np.load(data)
    vol = vol[None] if vol.ndim == 2 else vol
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)
    crops = []
    for _ in range(48):
        i, y, x = rng.integers(vol.shape[0]), rng.integers(vol.shape[1] - 63), rng.integers(vol.shape[2] - 63)
        crops.append(vol[i, y:y + 64, x:x + 64])
    x0 = torch.from_numpy(np.stack(crops).astype(np.float32))[:, None]
    x0 = x0 / x0.max() * 2 - 1  # {0, 1} or {0, 255} -> {-1, +1}, the training scaling of binary images
    out = {}
    with torch.no_grad():
        for st in NoiseSchedule(ck.schedule).steps(steps):
            xt = st.alphabar ** 0.5 * x0 + (1 - st.alphabar) ** 0.5 * torch.randn(x0.shape, generator=g)
            xh = st.predictor.a_x * xt - st.predictor.a_p * ck.model(xt, torch.full((x0.shape[0],), st.t))
            out[round(st.predictor.a_x, 9)] = (float(xh.mean()), float(xh.var()))
    return out


def make_steer(rule: str, calib: dict | None):
    """A drop-in for ``volume_fraction.steer`` (one channel) applying ``rule``."""
    def steer(x, pred, predictor, targets):
        V, phi = x.shape[0], targets[0]
        xh = (predictor.a_x * x.float() - predictor.a_p * pred.float()).reshape(V, -1)
        if rule.startswith("moment"):
            m_t, v_t = calib[round(predictor.a_x, 9)]
            new = m_t + (xh - xh.mean(1, keepdim=True)) * (v_t ** 0.5 / xh.std(1, keepdim=True).clamp_min(1e-6))
            if rule == "moment+q":
                new = new + _offsets_binary(new, phi)
            return ((predictor.a_x * x.float().reshape(V, -1) - new) / predictor.a_p).view_as(pred).to(pred.dtype)
        c_q, c_m = _offsets_binary(xh, phi), (2 * phi - 1) - xh.mean(1, keepdim=True)
        w = (xh.var(1, keepdim=True) / (4 * phi * (1 - phi))).clamp(0, 1)
        c = c_m if rule == "mean" else w * c_q + (1 - w) * c_m
        return (pred.float() - c.view(V, 1, 1, 1, 1) / predictor.a_p).to(pred.dtype)
    return steer


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rule", choices=RULES, required=True)
    p.add_argument("--model", default=None, help="checkpoint for the calibration (default: the quality run's case)")
    p.add_argument("--data", help="training images for the moment rules (.npy)")
    p.add_argument("--steps", type=int, default=25, help="respaced steps of the sampler preset (preview: 25)")
    a = p.parse_args(argv[:split])
    rest = argv[split + 1:]
    case = rest[rest.index("--cases") + 1]
    torch.set_num_threads(1)
    calib = calibrate(a.model or case, a.data, a.steps) if a.rule.startswith("moment") else None
    if a.rule != "quantile":  # quantile: the shipped volume_fraction.steer itself
        sampler_module.steer = make_steer(a.rule, calib)
    results = _bench.RESULTS / "vf_rules" / a.rule
    quality_report.main(rest + ["--results", str(results)] if "--results" not in rest else rest)


if __name__ == "__main__":
    main()
