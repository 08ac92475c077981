"""The 2D model's x0-hat moments on real images, per noise level: the dispersion the volume-fraction control keeps.

Multi-plane sampling erodes a minority phase because every call's x0-hat is under-dispersed: its variance over
the volume falls below the variance the same model gives on real images at that noise level, and the phase-
fraction shift alone cannot restore it (issue 11; ``benchmarks/results/vf_rules``). ``measure`` diffuses real
crops to a grid of timesteps and records the per-channel mean and variance of x0-hat = a_x x_t - a_p p there;
``X0Moments.at(t)`` interpolates them linearly in t, and ``volume_fraction.steer`` scales every call's x0-hat
about its mean to that variance before shifting it to the target fractions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .schedule import NoiseSchedule, Predictor

GRID_POINTS = 64  # timesteps measured, evenly spaced over [0, T - 1]


@dataclass(frozen=True)
class X0Moments:
    """Per-channel mean, variance and phase fraction of x0-hat (each ``(len(t), C)``) at increasing timesteps ``t``.

    ``fraction``: the share of pixels that x0-hat puts in each phase (one channel: x0-hat > 0; K channels: argmax).
    """

    t: tuple[int, ...]
    mean: tuple[tuple[float, ...], ...]
    var: tuple[tuple[float, ...], ...]
    fraction: tuple[tuple[float, ...], ...] = ()
    crops: int = 0
    size: int = 0

    def at(self, t: int, field: str = "var") -> torch.Tensor:
        """``field`` ("mean", "var" or "fraction"), (C,) float32, at timestep ``t`` (linear between grid points,
        clamped at the ends)."""
        rows = torch.tensor(getattr(self, field), dtype=torch.float64)
        if len(self.t) == 1:
            return rows[0].float()
        ts = torch.tensor(self.t, dtype=torch.float64)
        j = int(torch.searchsorted(ts, torch.tensor(float(t), dtype=torch.float64)).clamp(1, len(self.t) - 1))
        w = float(((t - ts[j - 1]) / (ts[j] - ts[j - 1])).clamp(0, 1))
        return ((1 - w) * rows[j - 1] + w * rows[j]).float()

    def to_dict(self) -> dict:
        return {"t": list(self.t), **{f: [list(r) for r in getattr(self, f)] for f in ("mean", "var", "fraction")},
                "crops": self.crops, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict) -> "X0Moments":
        rows = {f: tuple(tuple(float(v) for v in r) for r in d.get(f, ())) for f in ("mean", "var", "fraction")}
        return cls(tuple(int(v) for v in d["t"]), **rows, crops=int(d.get("crops", 0)), size=int(d.get("size", 0)))


@torch.no_grad()
def measure(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, *, points: int = GRID_POINTS,
            seed: int = 0, batch: int = 64) -> X0Moments:
    """The moments of ``model``'s x0-hat on real images ``x0`` (B, C, S, S) in [-1, 1] diffused to ``points``
    timesteps (one noise draw per image and timestep, ``seed``), pooled over images and pixels."""
    device = next(model.parameters(), torch.empty(0)).device
    g = torch.Generator().manual_seed(seed)
    ts = sorted({round(i * (schedule.T - 1) / max(points - 1, 1)) for i in range(points)})
    means, variances, fractions = [], [], []
    for t in ts:
        ab = float(schedule.alphabar[t])
        pr = Predictor.at(ab, schedule.prediction)
        noise = torch.randn(x0.shape, generator=g)
        xt = (ab ** 0.5 * x0 + (1 - ab) ** 0.5 * noise).to(device)
        xh = torch.cat([pr.a_x * xt[i:i + batch] - pr.a_p * model(xt[i:i + batch], torch.full(
            (len(xt[i:i + batch]),), t, device=device)).float() for i in range(0, len(xt), batch)])
        flat = xh.transpose(0, 1).reshape(xh.shape[1], -1).double()
        means.append(tuple(float(v) for v in flat.mean(1)))
        variances.append(tuple(float(v) for v in flat.var(1)))
        won = flat > 0 if len(flat) == 1 else flat.argmax(0)[None] == torch.arange(len(flat))[:, None]  # (C, N)
        fractions.append(tuple(float(v) for v in won.double().mean(1)))
    return X0Moments(tuple(ts), tuple(means), tuple(variances), tuple(fractions), x0.shape[0], x0.shape[-1])
