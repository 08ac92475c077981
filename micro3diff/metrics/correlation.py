"""Microstructure metrics of the paper's section 3.5 (DESIGN 1.4): S2, Torquato L(z), error rate (eq. 24).

Conventions (shared by every function here and by the evaluation report):

* Input: a 2D image (H, W) or 3D volume (D, H, W), or a batch of them (B, *spatial) when ``ndim`` is
  given. Values must be binary {0, 1} (or bool), or integer labels 0..K-1 with ``phase=k``, or any
  values with ``threshold`` (a number, or ``"otsu"``): voxels above it are phase 1.
* Phase: the indicator is ``x == phase``, default ``phase=1`` (for a thresholded input, 1 = above).
* Lags: r = 0..r_max voxels, default r_max = min(spatial size) // 2; at most min(size) - 1, or
  min(size) // 2 when periodic.
* ``two_point``: S2(r) = P(two points at lag r both in the phase). Non-periodic (default): zero padding,
  S2(r) = (I*I)(r) / (1*1)(r) per lag vector r (autocorrelation of I over that of the window), counts
  exact (float64 FFT rounded to integers). Periodic: no padding, the volume wraps around. ``average``
  is the radial average: the mean of S2(r) over all lag vectors whose rounded |r| is the bin (the
  estimator of PoreSpy's two_point_correlation). ``parts`` are the lags along each array axis.
* ``lineal_path``: L(z) = P(a segment of z + 1 voxels along an axis lies in the phase), exact by run
  lengths. Non-periodic: windows that fit inside the line (n - z per line); periodic: lines wrap (n
  per line). ``parts`` are the array axes; ``average`` is their mean.
* S2(0) = L(0) = phi, the volume fraction.
* ``error_rate`` (eq. 24): 100 * sum_r |f_gen(r) - f_ref(r)| / sum_r f_ref(r) over r = 0..r_max,
  applied to the ``average`` curves; a per-axis (or per-plane) error compares the matching parts.

Axis and plane names are ``micro3diff.axes``'s: the array axes of (D, H, W) are ("x", "y", "z"), those of an
image (H, W) ("y", "z") (a yz slice); "yz" = slices at fixed D, "xz" = at fixed H, "xy" = at fixed W.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
import torch

from .. import ops
from ..axes import AXES, PLANES, orthogonal_planes
from ..errors import UserError
from ..phases import ArrayLike, Threshold, binarize
METRICS = ("two_point", "lineal_path")
LABELS = {"two_point": "S2", "lineal_path": "L"}  # short names in tables and plots
AXIS_NAMES = {2: AXES[1:], 3: AXES}


@dataclasses.dataclass(frozen=True)
class Correlation:
    """A correlation function of the lag r = 0..r_max.

    average: (*B, R + 1) the curve error rates use; parts: (*B, K, R + 1) its parts, named by ``names``
    (array axes, or the three planes of a volume). *B is the batch, absent for a single input.
    """

    average: torch.Tensor
    parts: torch.Tensor
    names: tuple[str, ...]


# --- inputs -------------------------------------------------------------------------------------


def _batched(x: torch.Tensor, ndim: int | None) -> tuple[torch.Tensor, bool]:
    """(B, *spatial) view of x and whether x had a batch dim."""
    if ndim is None:
        if x.dim() not in (2, 3):
            raise UserError(f"expected a 2D image or a 3D volume, got shape {tuple(x.shape)} (pass ndim= for a batch)")
        return x.unsqueeze(0), False
    if ndim not in (2, 3):
        raise UserError(f"ndim must be 2 or 3, got {ndim}")
    if x.dim() == ndim:
        return x.unsqueeze(0), False
    if x.dim() == ndim + 1:
        return x, True
    raise UserError(f"expected {ndim}D inputs (or a batch of them), got shape {tuple(x.shape)}")


def resolve_r_max(spatial: tuple[int, ...], r_max: int | None, periodic: bool) -> int:
    """r_max, default min(spatial) // 2; UserError beyond min(spatial) - 1 (periodic: min(spatial) // 2)."""
    limit = min(spatial) // 2 if periodic else min(spatial) - 1
    if r_max is None:
        return min(spatial) // 2
    if not 0 <= r_max <= limit:
        kind = "periodic: at most min(size) // 2" if periodic else "at most min(size) - 1"
        raise UserError(f"r_max={r_max} out of range for spatial size {spatial} ({kind} = {limit})")
    return int(r_max)


def _prepare(x: ArrayLike, r_max: int | None, ndim: int | None, periodic: bool, phase: int | None,
             threshold: Threshold) -> tuple[torch.Tensor, int, bool]:
    ind, batched = _batched(binarize(x, phase=phase, threshold=threshold), ndim)
    return ind, resolve_r_max(tuple(ind.shape[1:]), r_max, periodic), batched


def _result(average: torch.Tensor, parts: torch.Tensor, names: tuple[str, ...], batched: bool) -> Correlation:
    return Correlation(average, parts, names) if batched else Correlation(average[0], parts[0], names)


# --- S2 -----------------------------------------------------------------------------------------


def _fft_size(n: int) -> int:
    """Smallest m >= n with no prime factor above 5 (fast FFT length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _lags(n: int, r_max: int, periodic: bool, half: bool) -> torch.Tensor:
    """Lags kept along an axis of size n: 0..r_max (half) or -lo..r_max, each distinct lag once (periodic)."""
    lo = 0 if half else min(r_max, (n - 1) // 2) if periodic else r_max
    return torch.arange(-lo, r_max + 1)


def _take_lags(f: torch.Tensor, dim: int, lags: torch.Tensor, size: int) -> torch.Tensor:
    """Entries of f at lags -lo..r_max along dim (FFT order: lag r at index r mod size)."""
    lo, hi = -int(lags[0]), int(lags[-1])
    return torch.cat([f.narrow(dim, size - lo, lo), f.narrow(dim, 0, hi + 1)], dim=dim) if lo else f.narrow(dim, 0, hi + 1)


def _autocorrelation(ind: torch.Tensor, r_max: int, periodic: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Exact pair counts (I*I)(r). ind: (B, *spatial) -> ((B, *lag sizes) float64, lags per axis).

    Axis 0 keeps lags 0..r_max only, as (I*I)(-r) = (I*I)(r). Non-periodic: zero padding to
    n + r_max (enough for lags up to r_max; DESIGN's 2n gives the same counts). The inverse
    transform of axis 0 comes first and is cropped before the others run.
    """
    spatial = ind.shape[1:]
    dims = tuple(range(1, ind.dim()))
    sizes = [n if periodic else _fft_size(n + r_max) for n in spatial]
    lags = [_lags(n, r_max, periodic, half=(d == 0)) for d, n in enumerate(spatial)]
    f = torch.fft.rfftn(ind.double(), s=sizes, dim=dims)
    power = torch.fft.ifft(f.real.square_() + f.imag.square_(), dim=1).narrow(1, 0, r_max + 1)
    corr = torch.fft.irfftn(power, s=sizes[1:], dim=dims[1:])
    for d in dims[1:]:
        corr = _take_lags(corr, d, lags[d - 1], sizes[d - 1])
    return corr.round_(), lags


@functools.lru_cache(maxsize=4)
def _radial_bins(spatial: tuple[int, ...], r_max: int, periodic: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For the lag grid of _autocorrelation, flattened: bin of every lag (rounded |r|; r_max + 1 = beyond),
    window (1*1)(r), weight (2 where the lag also stands for its mirror -r, else 1); and the total
    weight per bin (r_max + 1,)."""
    nd = len(spatial)
    lags = [_lags(n, r_max, periodic, half=(d == 0)) for d, n in enumerate(spatial)]
    shape = [len(lag) for lag in lags]
    radius2 = torch.zeros(shape, dtype=torch.int64)
    window = torch.ones(shape, dtype=torch.float64)
    for d, (n, lag) in enumerate(zip(spatial, lags)):
        view = [1] * nd
        view[d] = -1
        radius2 += lag.square().view(view)
        window *= (torch.full_like(lag, n) if periodic else n - lag.abs()).double().view(view)
    mirrored = (lags[0] > 0) & ~(periodic & (2 * lags[0] == spatial[0]))
    weight = (1.0 + mirrored.double()).view([-1] + [1] * (nd - 1)).expand(shape).flatten()
    bins = radius2.double().sqrt_().round_().long().clamp_(max=r_max + 1).flatten()
    members = torch.bincount(bins, weights=weight, minlength=r_max + 2)[: r_max + 1]
    return tuple(t.to(device) for t in (bins, window.flatten(), weight, members))


def two_point(x: ArrayLike, r_max: int | None = None, *, ndim: int | None = None, periodic: bool = False,
              phase: int | None = None, threshold: Threshold = None) -> Correlation:
    """Two-point correlation S2(r), r = 0..r_max. x: (*spatial) or (B, *spatial) with ``ndim``.

    Returns average (*B, R + 1): radial average; parts (*B, ndim, R + 1): along each array axis.
    """
    ind, r_max, batched = _prepare(x, r_max, ndim, periodic, phase, threshold)
    spatial = tuple(ind.shape[1:])
    bins, window, weight, members = _radial_bins(spatial, r_max, periodic, ind.device)
    average, parts = [], []
    for item in ind.split(max(1, 2**25 // math.prod(spatial))):  # bounded FFT memory
        counts, lags = _autocorrelation(item, r_max, periodic)
        s2 = counts / window.view(counts.shape[1:])  # S2 of every lag vector
        offsets = torch.arange(len(item), device=ind.device)[:, None] * (r_max + 2)
        sums = torch.bincount((bins + offsets).flatten(), weights=(s2.flatten(1) * weight).flatten(),
                              minlength=len(item) * (r_max + 2))
        average.append(sums.view(len(item), r_max + 2)[:, : r_max + 1] / members)
        zero = [int(-lag[0]) for lag in lags]  # index of lag 0 along each axis
        parts.append(torch.stack([s2[(slice(None),) + tuple(slice(z, None) if e == d else z for e, z in enumerate(zero))]
                                  for d in range(len(spatial))], dim=1))
    return _result(torch.cat(average), torch.cat(parts), AXIS_NAMES[len(spatial)], batched)


# --- lineal path --------------------------------------------------------------------------------


def lineal_path(x: ArrayLike, r_max: int | None = None, *, ndim: int | None = None, periodic: bool = False,
                phase: int | None = None, threshold: Threshold = None) -> Correlation:
    """Torquato lineal path L(z), z = 0..r_max. x: (*spatial) or (B, *spatial) with ``ndim``.

    Returns average (*B, R + 1): mean over the axes; parts (*B, ndim, R + 1): along each array axis.
    """
    ind, r_max, batched = _prepare(x, r_max, ndim, periodic, phase, threshold)
    parts = ops.lineal_path(ind.contiguous(), r_max, periodic)
    return _result(parts.mean(dim=1), parts, AXIS_NAMES[ind.dim() - 1], batched)


def volume_fraction(x: ArrayLike, *, ndim: int | None = None, phase: int | None = None,
                    threshold: Threshold = None) -> torch.Tensor:
    """phi = fraction of voxels in the phase. x: (*spatial) or (B, *spatial) -> () or (B,) float64."""
    ind, batched = _batched(binarize(x, phase=phase, threshold=threshold), ndim)
    phi = ind.flatten(1).double().mean(dim=1)
    return phi if batched else phi[0]


def metric_function(name: str) -> Callable[..., Correlation]:
    """``two_point`` or ``lineal_path`` by name."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r} (use one of {', '.join(METRICS)})")
    return two_point if name == "two_point" else lineal_path


def plane_correlation(volumes: torch.Tensor, metric: str, r_max: int, *, periodic: bool = False) -> Correlation:
    """2D metric on the three orthogonal planes (paper protocol for a 2D reference).

    volumes: (B, D, H, W) indicator. parts (B, 3, R + 1): mean over the slices of each plane ("yz",
    "xz", "xy"); average (B, R + 1): mean of the three planes.
    """
    fn = metric_function(metric)
    parts = []
    for slices in orthogonal_planes(volumes).values():
        per_slice = fn(slices.reshape(-1, *slices.shape[2:]), r_max, ndim=2, periodic=periodic).average
        parts.append(per_slice.view(volumes.shape[0], slices.shape[1], -1).mean(dim=1))
    parts_t = torch.stack(parts, dim=1)
    return Correlation(parts_t.mean(dim=1), parts_t, PLANES)


def axis_lineal_path(volumes: np.ndarray | torch.Tensor, z: int, *, phase: int | None = None) -> list[float]:
    """L(z) along each array axis (D, H, W) of one volume (D, H, W) or the mean over a batch (B, D, H, W)."""
    x = torch.as_tensor(np.asarray(volumes))
    parts = lineal_path(x, z, ndim=3, phase=phase).parts  # (B, 3, z + 1) or (3, z + 1)
    return [float(v) for v in parts.reshape(-1, 3, z + 1).mean(0)[:, z]]
