"""Volume-fraction control: steer every denoiser call so that the predicted x_0 has the target phase fractions.

At each call the network output p gives x0-hat = a_x x - a_p p (``schedule.Predictor``). A per-volume,
per-channel offset c moves x0-hat to x0-hat + c, which is the output p - c / a_p: the update stays the
sampler's affine map, only p changes. c is chosen so that the phases of x0-hat + c (threshold at 0 for one
channel, argmax over K channels) have the target fractions:
- one channel: c = -(the (1 - phi) quantile of x0-hat), exact;
- K channels: c from a few multiplicative (log-ratio) updates, to within about 1e-3.
The final volume's fractions then equal the target up to the last call's discreteness.

With ``variance`` (the model's x0-hat variance on real images at this noise level, ``x0_moments.X0Moments``),
x0-hat is first scaled about its per-volume mean to that variance: the shift alone keeps phi but lets the
under-dispersed x0-hat of multi-plane sampling erode the minority phase's structure (issue 11).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import UserError
from .schedule import Predictor


def check_targets(targets: Sequence[float], channels: int) -> tuple[float, ...]:
    """The target fractions of phases 1.. (one channel: [phi_1]; K channels: K values summing to 1)."""
    t = tuple(float(v) for v in targets)
    want = 1 if channels == 1 else channels
    if len(t) != want:
        raise UserError(f"--volume-fraction needs {want} value(s) for this {max(2, channels)}-phase model, got {len(t)}")
    if any(not math.isfinite(v) or not 0 < v < 1 for v in t):
        raise UserError(f"volume fractions must be strictly between 0 and 1, got {list(t)}")
    if channels > 1 and abs(sum(t) - 1) > 1e-3:
        raise UserError(f"the {channels} volume fractions must sum to 1, got {sum(t):.4f}")
    return t


def _offsets_binary(x0: torch.Tensor, phi: float) -> torch.Tensor:
    """x0 (V, N) -> (V, 1) offsets c with mean(x0 + c > 0) = phi per volume."""
    k = max(1, min(x0.shape[1], round((1 - phi) * x0.shape[1])))
    return -x0.kthvalue(k, dim=1, keepdim=True).values


def _offsets_multi(x0: torch.Tensor, targets: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """x0 (V, K, N) -> (V, K, 1) offsets with argmax fractions near ``targets`` (K,)."""
    c = torch.zeros(x0.shape[0], x0.shape[1], 1, dtype=x0.dtype, device=x0.device)
    scale = x0.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    K = x0.shape[1]
    for _ in range(iters):
        lab = (x0 + c).argmax(1)
        frac = torch.stack([(lab == k).float().mean(1) for k in range(K)], 1).unsqueeze(-1)  # (V, K, 1)
        c = c + 0.5 * scale * (targets.view(1, K, 1).log() - frac.clamp_min(1e-4).log())
        c = c - c.mean(1, keepdim=True)
    return c


def steer(x: torch.Tensor, pred: torch.Tensor, predictor: Predictor, targets: Sequence[float],
          variance: torch.Tensor | None = None) -> torch.Tensor:
    """The network output moved so that x0-hat has the target fractions (and, with ``variance`` (C,), that
    variance per channel). x, pred: (V, D, C, H, W) -> same."""
    V, D, C, H, W = x.shape
    x0 = (predictor.a_x * x.float() - predictor.a_p * pred.float()).transpose(1, 2).reshape(V, C, -1)
    if variance is not None:
        centre = x0.mean(2, keepdim=True)
        scale = variance.to(x0).clamp_min(0).sqrt().view(1, C, 1) / x0.std(2, keepdim=True).clamp_min(1e-6)
        x0 = centre + (x0 - centre) * scale
    if C == 1:
        x0 = x0 + _offsets_binary(x0[:, 0], targets[0]).unsqueeze(1)
    else:
        x0 = x0 + _offsets_multi(x0, torch.tensor(targets, dtype=x0.dtype, device=x0.device))
    x0 = x0.view(V, C, D, H, W).transpose(1, 2)
    return ((predictor.a_x * x.float() - x0) / predictor.a_p).to(pred.dtype)
