"""Ablation of the volume-fraction control's rule (issue 11: why does multi-plane sampling erode a phase?).

The product's control (``volume_fraction.steer``) scales each call's x0-hat to the variance the model gives on
real images at that noise level (the checkpoint's ``x0_moments``, ``m3d calibrate``) and then shifts it by the
quantile that gives the target phi: quality_report's ``+vf`` on a calibrated model (rule "moment+q" in
benchmarks/results/vf_rules/), and ``+vfq`` for the shift alone (rule "quantile"). This harness swaps in other
rules for one run of ``quality_report.py`` (binary models only) and keeps that run's rows in
benchmarks/results/vf_rules/<rule>/quality.{json,md}:

* ``mean``: shift x0-hat to the data mean 2 phi - 1 (the law of total expectation holds at every noise level);
* ``blend``: quantile and mean shifts weighted by x0-hat's explained variance, var(x0-hat) / 4 phi (1 - phi);
* ``moment``: x0-hat moved to the checkpoint's calibrated mean and variance, with no quantile shift;
* ``fraction``: the calibrated variance, then the shift to the share of x0-hat above 0 that real images give at
  the call's noise level (scaled to reach phi at t = 0) instead of phi at every level. On the exact denoiser of
  i.i.d. binary voxels (tests/test_schedule.BinaryOracle, p = 0.2, 32^3) the phi shift moves the result to
  phi 0.04, this rule to 0.20 with ``preview`` but 0.01 with ``fast``;
* ``logodds``: the calibrated variance, then the shift applied to atanh(x0-hat) (clamped to |x0-hat| < 1 - 1e-4;
  a tie at the quantile is split to the nearer count) instead of x0-hat: for i.i.d. binary data that is the exact posterior mean under other prior odds, and it
  leaves saturated voxels saturated. On the same oracle: phi 0.204 (``preview``), 0.200 (``fast``).

The rows there were made before the product had the rule, by this harness with its own calibration (48 random
64^2 crops per respaced step), which the checkpoints' calibration (``training.calibrate``) replaced.

  PYTHONPATH=. python benchmarks/vf_rules.py --rule mean -- --cases spheres --settings preview+vf --size 32 \
      --count 4 --threads 1

Everything after ``--`` goes to quality_report.py (its ``--settings`` must include ``vf``).
"""
from __future__ import annotations

import argparse
import sys

import torch

import _bench
import quality_report
import micro3diff.diffusion.sampler as sampler_module
from micro3diff.diffusion.schedule import NoiseSchedule, Predictor
from micro3diff.diffusion.volume_fraction import _offsets_binary, steer as product_steer
from micro3diff.io.checkpoint import load_checkpoint

RULES = ("mean", "blend", "moment", "fraction", "logodds")  # quantile and moment+q: the product's (+vfq and +vf)


def _offsets_tied(u: torch.Tensor, phi: float) -> torch.Tensor:
    """``_offsets_binary``, but where the k-th value is tied (the clamp saturates many voxels at one value) the
    threshold goes just below or above the tied group, whichever count is nearer N - k. u (V, N) -> (V, 1)."""
    N = u.shape[1]
    k = max(1, min(N, round((1 - phi) * N)))
    c = _offsets_binary(u, phi)
    for v in range(u.shape[0]):
        row, tau = u[v], -c[v, 0]
        above, tied = int((row > tau).sum()), int((row == tau).sum())
        if tied > 1 and abs(above + tied - (N - k)) < abs(above - (N - k)):
            below = row[row < tau]
            c[v, 0] = -(tau + below.max()) / 2 if below.numel() else -(tau - 1)
    return c


def make_steer(rule: str, model: str):
    """A drop-in for ``volume_fraction.steer`` (one channel) applying ``rule`` with ``model``'s x0-hat moments."""
    ck = load_checkpoint(model)
    moments, sched = ck.x0_moments, NoiseSchedule(ck.schedule)
    a_x = torch.tensor([Predictor.at(float(ab), sched.prediction).a_x for ab in sched.alphabar])

    def steer(x, pred, predictor, targets, variance=None):
        V, phi = x.shape[0], targets[0]
        t = int((a_x - predictor.a_x).abs().argmin())  # the call's timestep, from its coefficients
        if rule == "fraction":  # the variance, then the share above 0 that real images give at t (-> phi at t = 0)
            f = moments.at(t, "fraction").item() * phi / moments.at(0, "fraction").item()
            return product_steer(x, pred, predictor, [min(max(f, 1e-4), 1 - 1e-4)], moments.at(t, "var"))
        xh = (predictor.a_x * x.float() - predictor.a_p * pred.float()).reshape(V, -1)
        if rule == "logodds":  # the calibrated variance, then the shift in atanh(x0-hat): a change of prior odds
            c0, var = xh.mean(1, keepdim=True), moments.at(t, "var").item()
            xh = c0 + (xh - c0) * (var ** 0.5 / xh.std(1, keepdim=True).clamp_min(1e-6))
            u = torch.atanh(xh.clamp(-1 + 1e-4, 1 - 1e-4))
            new = torch.tanh(u + _offsets_tied(u, phi))
            return ((predictor.a_x * x.float().reshape(V, -1) - new) / predictor.a_p).view_as(pred).to(pred.dtype)
        if rule == "moment":
            m_t, v_t = moments.at(t, "mean").item(), moments.at(t, "var").item()
            new = m_t + (xh - xh.mean(1, keepdim=True)) * (v_t ** 0.5 / xh.std(1, keepdim=True).clamp_min(1e-6))
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
    p.add_argument("--model", help="calibrated checkpoint whose moments the rules use (default: the case's)")
    a = p.parse_args(argv[:split])
    rest = argv[split + 1:]
    torch.set_num_threads(1)
    sampler_module.steer = make_steer(a.rule, a.model or rest[rest.index("--cases") + 1])
    results = _bench.RESULTS / "vf_rules" / a.rule
    quality_report.main(rest + ["--results", str(results)] if "--results" not in rest else rest)


if __name__ == "__main__":
    main()
