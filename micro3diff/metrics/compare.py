"""Comparisons of correlation curves (paper 3.5): error rate (eq. 24), isotropy, the natural-variability floor
(real crops of the generated size) and the shuffled baseline (the reference's voxels permuted)."""
from __future__ import annotations

import dataclasses

import torch

from ..errors import UserError
from ..phases import ArrayLike, as_tensor
from .correlation import Correlation, metric_function


@dataclasses.dataclass(frozen=True)
class Baseline:
    """Reference-derived comparison curves: curves (K, R + 1) and their error rates against the reference (K,)."""

    curves: torch.Tensor
    errors: torch.Tensor


def error_rate(f_gen: ArrayLike, f_ref: ArrayLike) -> torch.Tensor:
    """Eq. 24: 100 * sum_r |f_gen - f_ref| / sum_r f_ref. f_gen: (..., R + 1), f_ref: (..., R + 1) -> (...) float64."""
    f_gen, f_ref = as_tensor(f_gen).double(), as_tensor(f_ref).double().to(as_tensor(f_gen).device)
    if f_gen.shape[-1] != f_ref.shape[-1]:
        raise UserError(f"curves have different lengths: {f_gen.shape[-1]} and {f_ref.shape[-1]} lags")
    area = f_ref.sum(dim=-1)
    if bool((area <= 0).any()):
        raise UserError("the reference curve is zero everywhere (is the phase absent from the reference?)")
    return 100.0 * (f_gen - f_ref).abs().sum(dim=-1) / area


def isotropy(corr: Correlation) -> dict[str, torch.Tensor]:
    """Error rate of each part (axis or plane) against the mean of the parts: 0 for an isotropic sample.

    corr.parts: (*B, K, R + 1) -> {name: (*B,)}.
    """
    mean = corr.parts.mean(dim=-2)
    return {name: error_rate(corr.parts[..., k, :], mean) for k, name in enumerate(corr.names)}


def random_crops(reference: torch.Tensor, size: tuple[int, ...], n_crops: int, *, seed: int = 0) -> torch.Tensor:
    """n_crops crops of ``size`` at uniform random positions (seeded). reference: (*spatial) -> (n_crops, *size)."""
    if len(size) != reference.dim() or any(s > n for s, n in zip(size, reference.shape)):
        raise UserError(f"cannot crop {tuple(size)} out of a reference of shape {tuple(reference.shape)}")
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(n_crops):
        corner = [int(torch.randint(0, n - s + 1, (1,), generator=gen)) for s, n in zip(size, reference.shape)]
        crops.append(reference[tuple(slice(c, c + s) for c, s in zip(corner, size))])
    return torch.stack(crops)


def natural_variability_floor(reference: torch.Tensor, size: tuple[int, ...], metric: str, r_max: int, *,
                              n_crops: int = 64, periodic: bool = False, seed: int = 0) -> Baseline:
    """The metric of real crops of the generated size against the full reference (the best a generator can do).

    reference: (*spatial) indicator -> curves (n_crops, R + 1), errors (n_crops,).
    """
    fn = metric_function(metric)
    ref = fn(reference, r_max, periodic=periodic).average
    crops = fn(random_crops(reference, size, n_crops, seed=seed), r_max, ndim=reference.dim(), periodic=periodic).average
    return Baseline(crops, error_rate(crops, ref))


def shuffled_baseline(reference: torch.Tensor, metric: str, r_max: int, *, periodic: bool = False,
                      seed: int = 0) -> Baseline:
    """The metric of the reference with its voxels randomly permuted (right phi, no structure).

    reference: (*spatial) indicator -> curves (1, R + 1), errors (1,).
    """
    fn = metric_function(metric)
    gen = torch.Generator().manual_seed(seed)
    flat = reference.flatten()
    shuffled = flat[torch.randperm(flat.numel(), generator=gen).to(flat.device)].view_as(reference)
    curve = fn(shuffled, r_max, periodic=periodic).average[None]
    return Baseline(curve, error_rate(curve, fn(reference, r_max, periodic=periodic).average))
