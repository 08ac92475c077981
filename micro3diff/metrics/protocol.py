"""The evaluation protocol of the paper cases (paper 3.5): generated samples against a reference, per metric.

Each function returns {"reference_curve", "generated_mean_curve", "error_per_volume" (a ``summary`` over the
samples), "error_of_mean_curve", errors per axis or plane, "floor_volume" (real data of the generated size
against the reference: the best a perfect generator could expect), "shuffled" (the reference's voxels
permuted: right volume fraction, no structure)}; errors are eq. 24 error rates in %.

- ``evaluate_3d``: 3D metrics of volumes against a 3D reference; floor: random crops of the volumes' size.
- ``evaluate_planes``: 2D metrics on the three orthogonal planes of each volume against the mean curve of 2D
  reference images; floor: single real images of the slice size (``floor_single_image``) and the mean of a
  volume's worth (3 * S) of them, as a volume's curve averages 3 * S slices (``floor_volume``).
- ``evaluate_images``: 2D samples against 2D reference images; floor: real images of the samples' size.
"""
from __future__ import annotations

import torch

from .compare import error_rate, natural_variability_floor, random_crops, shuffled_baseline
from .correlation import metric_function, plane_correlation


def summary(x: torch.Tensor) -> dict:
    """mean, std (0 for one value), n, min and max of the values of x."""
    x = x.double().flatten()
    return {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0, "n": int(x.numel()),
            "min": float(x.min()), "max": float(x.max())}


def _shuffled(ref: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The images ref (N, H, W), each with its pixels permuted by one shared permutation."""
    return ref.flatten(1)[:, torch.randperm(ref[0].numel(), generator=gen)].view_as(ref)


def evaluate_3d(ref: torch.Tensor, vols: torch.Tensor, metric: str, r_max: int, *, crops: int = 64,
                seed: int = 0) -> dict:
    """ref: (D, H, W) indicator; vols: (V, d, h, w) indicators."""
    fn = metric_function(metric)
    ref_curve = fn(ref, r_max).average
    gen = fn(vols, r_max, ndim=3)
    errors = error_rate(gen.average, ref_curve)
    axis_err = error_rate(gen.parts.mean(dim=0), fn(ref, r_max).parts)
    floor = natural_variability_floor(ref, tuple(vols.shape[1:]), metric, r_max, n_crops=crops, seed=seed)
    base = shuffled_baseline(ref, metric, r_max, seed=seed)
    return {"reference_curve": ref_curve.tolist(), "generated_mean_curve": gen.average.mean(dim=0).tolist(),
            "error_per_volume": summary(errors),
            "error_of_mean_curve": float(error_rate(gen.average.mean(dim=0), ref_curve)),
            "error_per_axis": dict(zip(gen.names, axis_err.tolist())),
            "floor_volume": summary(floor.errors), "shuffled": float(base.errors[0])}


def evaluate_planes(ref: torch.Tensor, vols: torch.Tensor, metric: str, r_max: int, *, crops: int = 64,
                    floor_repeats: int = 16, seed: int = 0) -> dict:
    """ref: (N, H, W) indicator images (one image: N = 1, crops are drawn from it); vols: (V, S, S, S)."""
    fn = metric_function(metric)
    ref_curve = fn(ref, r_max, ndim=2).average.mean(dim=0)
    corr = plane_correlation(vols, metric, r_max)  # average (V, R+1), parts (V, 3, R+1)
    errors = error_rate(corr.average, ref_curve)
    plane_err = error_rate(corr.parts.mean(dim=0), ref_curve)  # (3,)
    size = tuple(vols.shape[2:])
    gen = torch.Generator().manual_seed(seed)

    def real_images(n: int) -> torch.Tensor:
        if ref.shape[1:] == size:  # a stack of images of the right size: draw images without replacement
            return ref[torch.randperm(ref.shape[0], generator=gen)[:n]]
        return random_crops(ref[0], size, n, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
    single = fn(real_images(crops), r_max, ndim=2).average
    per_volume = torch.stack([fn(real_images(3 * size[0]), r_max, ndim=2).average.mean(dim=0)
                              for _ in range(floor_repeats)])
    base = fn(_shuffled(ref, gen), r_max, ndim=2).average.mean(dim=0)
    return {"reference_curve": ref_curve.tolist(), "generated_mean_curve": corr.average.mean(dim=0).tolist(),
            "error_per_volume": summary(errors),
            "error_of_mean_curve": float(error_rate(corr.average.mean(dim=0), ref_curve)),
            "error_per_plane": dict(zip(corr.names, plane_err.tolist())),
            "floor_single_image": summary(error_rate(single, ref_curve)),
            "floor_volume": summary(error_rate(per_volume, ref_curve)),
            "shuffled": float(error_rate(base, ref_curve))}


def evaluate_images(ref: torch.Tensor, images: torch.Tensor, metric: str, r_max: int, *, crops: int = 64,
                    seed: int = 0) -> dict:
    """ref: (N, H, W) indicator images; images: (M, S, S) generated indicator images."""
    fn = metric_function(metric)
    ref_curve = fn(ref, r_max, ndim=2).average.mean(dim=0)
    curves = fn(images, r_max, ndim=2).average
    size = tuple(images.shape[1:])
    if tuple(ref.shape[1:]) == size:
        real = ref[torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(seed))[:crops]]
    else:
        real = torch.cat([random_crops(ref[i % ref.shape[0]], size, 1, seed=seed + i) for i in range(crops)])
    floor = error_rate(fn(real, r_max, ndim=2).average, ref_curve)
    base = fn(_shuffled(ref, torch.Generator().manual_seed(seed)), r_max, ndim=2).average.mean(dim=0)
    return {"error_per_volume": summary(error_rate(curves, ref_curve)),
            "error_of_mean_curve": float(error_rate(curves.mean(dim=0), ref_curve)),
            "floor_volume": summary(floor), "shuffled": float(error_rate(base, ref_curve))}
