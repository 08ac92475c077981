"""Consistency of the statistics across one volume: drift between blocks, seams where a periodic volume wraps.

A volume generated larger than the training crops (``m3d sample --shape 64 64 256``) should have the same
statistics everywhere: cut it into ``n_blocks`` equal blocks along an axis (default the longest) and compare
the blocks' S2 / L(z) with each other and with the whole volume (error rate, eq. 24). A reference gives
the natural spread of the same numbers: real blocks differ too (``reference_drift``).

A periodic volume (``m3d sample --periodic``) wraps without a seam: its periodic and non-periodic S2 agree,
and a 2 x 2 x 2 tiled copy has the L(z) of the volume itself (``seam_errors``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from .. import phases
from ..errors import UserError
from . import compare, correlation


@dataclasses.dataclass(frozen=True)
class Drift:
    """Blocks along ``axis``: curves (N, R + 1), whole (R + 1,) of the whole volume (errors in %).

    to_whole (N,): each block against the whole volume; first_last: the last block against the first.
    """

    metric: str
    axis: int
    curves: torch.Tensor
    whole: torch.Tensor
    to_whole: torch.Tensor
    first_last: float


def block_drift(volume: phases.ArrayLike, n_blocks: int = 3, *, axis: int | None = None,
                metric: str = "two_point", r_max: int | None = None, phase: int | None = None,
                threshold: phases.Threshold = None) -> Drift:
    """S2 or L of ``n_blocks`` equal blocks of volume (D, H, W) along ``axis`` (a remainder is left out).

    r_max: default half the block's smallest side. Non-periodic estimators throughout (a block does not wrap).
    """
    ind = phases.binarize(volume, phase=phase, threshold=threshold)
    if ind.dim() != 3:
        raise UserError(f"drift needs a 3D volume, got shape {tuple(ind.shape)}")
    axis = int(np.argmax(ind.shape)) if axis is None else axis
    if not 0 <= axis < 3 or n_blocks < 2 or ind.shape[axis] < n_blocks:
        raise UserError(f"cannot cut {n_blocks} blocks (need >= 2) along axis {axis} of shape {tuple(ind.shape)}")
    size = ind.shape[axis] // n_blocks
    blocks = ind.narrow(axis, 0, size * n_blocks).unflatten(axis, (n_blocks, size)).movedim(axis, 0)
    r_max = correlation.resolve_r_max(tuple(blocks.shape[1:]), r_max, periodic=False)
    fn = correlation.metric_function(metric)
    curves = fn(blocks, r_max, ndim=3).average
    whole = fn(ind, r_max).average
    return Drift(metric, axis, curves, whole, compare.error_rate(curves, whole),
                 float(compare.error_rate(curves[-1], curves[0])))


def reference_drift(reference: phases.ArrayLike, shape: Sequence[int], n_blocks: int = 3, *, axis: int | None = None,
                    metric: str = "two_point", r_max: int | None = None, n_crops: int = 16, seed: int = 0,
                    phase: int | None = None, threshold: phases.Threshold = None) -> torch.Tensor:
    """Natural spread: first-vs-last block error (%) of ``n_crops`` random crops of ``shape`` of a 3D reference.

    Returns (n_crops,) float64; compare a generated volume's ``block_drift(...).first_last`` with it.
    """
    ref = phases.binarize(reference, phase=phase, threshold=threshold)
    crops = compare.random_crops(ref, tuple(shape), n_crops, seed=seed)
    return torch.tensor([block_drift(c, n_blocks, axis=axis, metric=metric, r_max=r_max).first_last for c in crops],
                        dtype=torch.float64)


def drift_report(generated: Sequence[phases.ArrayLike], reference: phases.ArrayLike | None, n_blocks: int, *,
                 r_max: int | None = None, phase: int | None = None, threshold: phases.Threshold = None,
                 n_crops: int = 16, seed: int = 0) -> dict:
    """{metric: {"axis", "n_blocks", "reference_first_last"; per volume "first_last", "block_fractions",
    "worst_to_whole"}}.

    generated: 3D volumes of one shape. ``reference_first_last`` (mean, std over crops) is None when the
    reference is missing, not 3D or smaller than the volumes.
    """
    shape = tuple(np.shape(generated[0]))
    fits = reference is not None and np.ndim(reference) == 3 and all(s <= n for s, n in zip(shape, np.shape(reference)))
    report = {}
    for metric in correlation.METRICS:
        drifts = [block_drift(v, n_blocks, metric=metric, r_max=r_max, phase=phase, threshold=threshold)
                  for v in generated]
        natural = None
        if fits:
            spread = reference_drift(reference, shape, n_blocks, axis=drifts[0].axis, metric=metric, r_max=r_max,
                                     n_crops=n_crops, seed=seed, phase=phase, threshold=threshold)
            natural = {"mean": float(spread.mean()), "std": float(spread.std()), "n_crops": n_crops}
        report[metric] = {"axis": drifts[0].axis, "n_blocks": n_blocks, "first_last": [d.first_last for d in drifts],
                          "block_fractions": [[float(phi) for phi in d.curves[:, 0]] for d in drifts],
                          "worst_to_whole": [float(d.to_whole.max()) for d in drifts], "reference_first_last": natural}
    return report


def seam_errors(volume: phases.ArrayLike, *, phase: int | None = None, threshold: phases.Threshold = None,
                near: int = 2) -> dict:
    """Seam check of volume (D, H, W) where it wraps around; per-axis lists are in array-axis order (D, H, W).

    ``two_point_periodic_vs_open`` (%): periodic S2 against the non-periodic S2 of the volume.
    ``lineal_path_tiled`` (%, per axis): L(z) of the 2 x 2 x 2 tiled volume against L(z) of the volume
    (non-periodic, r_max half the smallest side); both mostly measure sampling noise at small sizes.
    ``interface_contrast`` (per axis): P(the two voxels differ) across the wrap plane (last slice | first
    slice) over the same across the ``near`` interior planes next to it on each side: about 1 without a
    seam (local, so insensitive to how phi varies over the volume), several times 1 with one.
    """
    ind = phases.binarize(volume, phase=phase, threshold=threshold)
    if ind.dim() != 3 or min(ind.shape) < 2 * near + 2:
        raise UserError(f"seam check needs a 3D volume with sides >= {2 * near + 2}, got shape {tuple(ind.shape)}")
    r_max = min(ind.shape) // 2
    s2 = [correlation.two_point(ind, r_max, periodic=p).average for p in (True, False)]
    tiled = correlation.lineal_path(ind.repeat(2, 2, 2), r_max).parts
    single = correlation.lineal_path(ind, r_max).parts
    contrast = []
    for axis in range(3):
        x = ind.movedim(axis, 0)
        differ = (x != x.roll(-1, 0)).flatten(1).double().mean(1)  # plane i | i + 1; the last one wraps
        interior = torch.cat([differ[:near], differ[-1 - near:-1]]).mean()
        contrast.append(float(differ[-1] / interior.clamp_min(1e-12)))
    return {"two_point_periodic_vs_open": float(compare.error_rate(*s2)),
            "lineal_path_tiled": [float(e) for e in compare.error_rate(tiled, single)],
            "interface_contrast": contrast}
