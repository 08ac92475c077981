"""Seeded synthetic microstructures: the paper's cases I and II and test materials with exact statistics.

Every generator takes ``shape`` ((H, W) for one 2D image, (D, H, W) for a volume) and ``seed`` (anything
``numpy.random.default_rng`` accepts) and returns a :class:`Microstructure` whose ``array`` is uint8.
``image_stack`` turns any of them into a set of independent 2D images (N, H, W). Coordinates are array
indices: voxel ``i`` has its centre at ``i``; a periodic structure wraps with period ``shape``.

- ``spheres``: non-overlapping spheres (disks in 2D), normal diameters, random sequential addition (case I).
- ``multiphase``: the same with several inclusion phases, labels 0 (matrix), 1..K.
- ``polycrystal``: Laguerre tessellation with 1-pixel boundaries (value 1), three grain sizes (case II).
- ``overlapping_spheres``: Boolean model, matrix = 1, so ``L(z) = phi^(1 + 3z/(4R))`` holds for phase 1.
- ``ellipsoids``: aligned ellipsoids (overlapping Boolean model or non-overlapping), an anisotropic material.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UserError
from .placement import MAX_ATTEMPTS, ball_measure, boolean_model, laguerre, rsa, seeds

Seed = int | np.random.SeedSequence | None

_LAGUERRE_ITERATIONS = 6  # weight updates that bring Laguerre cells to their target sizes


@dataclass(frozen=True)
class Microstructure:
    """A generated structure and what it was built from.

    array:   uint8, shape (H, W), (D, H, W), or (N, H, W) for a stack of independent 2D images.
    centres: (n, array.ndim) float64 particle centres or grain seeds, in index coordinates (None if none).
    radii:   (n,) float64 sphere radii, or nominal grain radii (grain size / 2) for polycrystals.
    phase:   (n,) uint8 value each particle's voxels carry in ``array``.
    labels:  int32 grain id of every pixel (index into ``centres``), same shape as ``array``; polycrystals only.
    stack:   True when ``array`` is (N, H, W) independent 2D images.
    """

    array: np.ndarray
    centres: np.ndarray | None = None
    radii: np.ndarray | None = None
    phase: np.ndarray | None = None
    labels: np.ndarray | None = None
    stack: bool = False


# --------------------------------------------------------------------------------------------- checks


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise UserError(f"shape must be 2 or 3 positive sizes, got {shape}")
    return shape


def _fraction(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise UserError(f"{name} must lie strictly between 0 and 1, got {value}")
    return float(value)


# ------------------------------------------------------------------------------------------ generators


def multiphase(
    shape: Sequence[int] = (64, 64, 64),
    diameter_mean: Sequence[float] = (15.0, 7.0),
    diameter_sd: Sequence[float] = (3.0, 1.5),
    volume_fraction: Sequence[float] = (0.15, 0.1),
    periodic: bool = True,
    seed: Seed = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Microstructure:
    """Non-overlapping spheres (disks in 2D) of K kinds in a matrix: labels 0 (matrix) and 1..K.

    Kind p has diameters ~ Normal(diameter_mean[p], diameter_sd[p]) (redrawn outside [1, min(shape) - 1])
    and fills ``volume_fraction[p]`` of the voxels (reached or just passed); phases with bigger particles
    are placed first, the others fill the gaps.
    Raises UserError for impossible parameters or when no free position is found.
    """
    shape = _shape(shape)
    means, sds, targets = (np.atleast_1d(np.asarray(v, float)) for v in (diameter_mean, diameter_sd, volume_fraction))
    if not len(means) == len(sds) == len(targets) or len(means) > 255:
        raise UserError("diameter_mean, diameter_sd and volume_fraction need one value per inclusion phase")
    for f in targets:
        _fraction("volume_fraction", f)
    _fraction("total volume fraction", targets.sum())
    if (means <= 0).any() or (sds < 0).any():
        raise UserError("diameters must be positive and their standard deviations non-negative")
    if (means >= min(shape) / 2).any():
        raise UserError(f"mean diameter must be below half the smallest side ({min(shape) / 2}) of shape {shape}")
    rng = np.random.default_rng(seed)

    def draw_radius(p: int) -> float:
        while not 1.0 <= (d := rng.normal(means[p], sds[p])) <= min(shape) - 1:
            pass
        return d / 2

    order = np.argsort(-means, kind="stable")
    return Microstructure(*rsa(shape, targets, order, draw_radius, np.ones(len(shape)), periodic, rng, max_attempts))


def spheres(
    shape: Sequence[int] = (300, 64, 64),
    diameter_mean: float = 15.0,
    diameter_sd: float = 4.0,
    volume_fraction: float = 0.2,
    periodic: bool = True,
    seed: Seed = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Microstructure:
    """Non-overlapping spherical inclusions (1) in a matrix (0), paper case I (64 x 64 x 300 voxels).

    Diameters ~ Normal(diameter_mean, diameter_sd); every drawn sphere is placed (so the placed diameters
    keep that law) until ``volume_fraction`` of the voxels is reached (up to about 0.25-0.3 for 15 +- 4
    in 64 x 64 x 300; beyond that random addition jams and UserError says so). A 2D shape gives disks.
    ``centres`` (n, ndim) and ``radii`` (n,) list the placed spheres. Raises UserError if it cannot be done.
    """
    return multiphase(shape, (diameter_mean,), (diameter_sd,), (volume_fraction,), periodic, seed, max_attempts)


def overlapping_spheres(
    shape: Sequence[int] = (128, 128, 128),
    radius: float = 6.0,
    matrix_fraction: float = 0.6,
    periodic: bool = True,
    seed: Seed = None,
) -> Microstructure:
    """Boolean model of overlapping spheres (disks in 2D) of ``radius``; the matrix outside them is 1.

    The expected matrix fraction is ``phi = matrix_fraction = exp(-n |B_R| / V)``, so for phase 1
    ``L(z) = phi^(1 + 3z/(4R))`` and ``S2(r) = phi^(1 + 3r/(4R) - r^3/(16R^3))`` (r <= 2R) in 3D.
    """
    shape = _shape(shape)
    phi = _fraction("matrix_fraction", matrix_fraction)
    if not 0 < radius < min(shape) / 2:
        raise UserError(f"radius must be positive and below half the smallest side of shape {shape}, got {radius}")
    rng = np.random.default_rng(seed)
    covered, centres = boolean_model(shape, np.full(len(shape), float(radius)), 1.0 - phi, periodic, rng)
    n = len(centres)
    return Microstructure(1 - covered, centres, np.full(n, float(radius)), np.zeros(n, np.uint8))


def ellipsoids(
    shape: Sequence[int] = (64, 64, 64),
    semi_axes: Sequence[float] = (12.0, 4.0, 4.0),
    volume_fraction: float = 0.2,
    overlapping: bool = True,
    periodic: bool = True,
    seed: Seed = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Microstructure:
    """Identical axis-aligned ellipsoids (1) in a matrix (0): an anisotropic test material.

    semi_axes: one per array axis, e.g. (a_d, a_h, a_w) = (12, 4, 4) for needles along D.
    overlapping=True: Boolean model with expected ellipsoid fraction ``volume_fraction``; False: random
    sequential addition of non-overlapping ellipsoids until that voxel fraction is reached.
    """
    shape = _shape(shape)
    axes = np.asarray(semi_axes, dtype=float)
    f = _fraction("volume_fraction", volume_fraction)
    if axes.shape != (len(shape),) or (axes <= 0).any() or (2 * axes >= shape).any():
        raise UserError(
            f"semi_axes need {len(shape)} positive values, each below half its side of {shape}; got {tuple(axes)}"
        )
    rng = np.random.default_rng(seed)
    if not overlapping:
        array, centres, _, phase = rsa(shape, np.array([f]), [0], lambda p: 1.0, axes, periodic, rng, max_attempts)
        return Microstructure(array, centres, None, phase)
    covered, centres = boolean_model(shape, axes, f, periodic, rng)
    return Microstructure(covered, centres, None, np.ones(len(centres), np.uint8))


def polycrystal(
    shape: Sequence[int] = (64, 64),
    grain_sizes: Sequence[float] = (6.0, 9.0, 12.0),
    periodic: bool = True,
    seed: Seed = None,
) -> Microstructure:
    """Laguerre (power-weighted Voronoi) grains with 1-pixel boundaries (1) between grain interiors (0).

    Paper case II: grain sizes 6, 9 and 12 px (equivalent diameters) each covering an equal share of a
    64 x 64 image. Each class gets ``round(area / K / |B_(d/2)|)`` seeds, placed as non-overlapping disks
    of the scaled radius so cells are compact, with Laguerre weights = squared radii; the weights are then
    adjusted so every cell reaches its target size. A pixel is boundary when its owner differs from the
    owner of its next pixel along any axis (one-sided: thin, 8-connected lines). 3D shapes give a volume.
    ``labels`` holds each pixel's grain (owner) and ``radii`` the nominal grain radius of each seed.
    """
    shape = _shape(shape)
    sizes = np.asarray(grain_sizes, dtype=float)
    k, total = len(shape), math.prod(shape)
    if sizes.ndim != 1 or len(sizes) == 0 or (sizes < 2).any() or (sizes > min(shape)).any():
        raise UserError(f"grain sizes must be between 2 and the smallest side {min(shape)}, got {tuple(sizes)}")
    counts = [max(1, round(total / len(sizes) / float(ball_measure(d / 2, k)))) for d in sizes]
    radii = np.sort(np.repeat(sizes / 2, counts))[::-1]
    target = ball_measure(radii, k)
    target *= total / target.sum()
    rng = np.random.default_rng(seed)
    # Seeds: non-overlapping balls filling ~45 % (2D) / 30 % (3D) of the space, biggest first.
    scale = ((0.45 if k == 2 else 0.3) * total / ball_measure(radii, k).sum()) ** (1 / k)
    centres = seeds(radii * scale, shape, periodic, rng)
    weights = (radii * scale) ** 2
    for i in range(_LAGUERRE_ITERATIONS + 1):
        owner = laguerre(centres, weights, shape, periodic)
        if i < _LAGUERRE_ITERATIONS:
            cells = np.bincount(owner.ravel(), minlength=len(radii))
            # Raising w_i by dw moves each facet by ~dw / (4 r): half of the step that would close the gap.
            weights = weights + 2 * radii**2 * (target - cells) / (k * ball_measure(radii, k))
    boundary = np.zeros(shape, bool)
    for axis in range(k):
        if periodic:
            boundary |= owner != np.roll(owner, -1, axis)
        else:
            here, ahead = [slice(None)] * k, [slice(None)] * k
            here[axis], ahead[axis] = slice(None, -1), slice(1, None)
            boundary[tuple(here)] |= owner[tuple(here)] != owner[tuple(ahead)]
    return Microstructure(boundary.astype(np.uint8), centres, radii, None, owner.astype(np.int32))


def image_stack(
    generate: Callable[..., Microstructure], count: int, shape: Sequence[int], seed: Seed = None, **kwargs: Any
) -> Microstructure:
    """``count`` independent 2D images from ``generate`` (any generator here) as one (count, H, W) stack.

    Image i uses the i-th child of ``SeedSequence(seed)``. Centres gain the image index as first
    coordinate; grain labels are offset so they stay indices into the concatenated centres.
    """
    if len(shape) != 2 or count < 1:
        raise UserError(f"an image stack needs a 2D shape (H, W) and count >= 1; got {tuple(shape)}, {count}")
    parts = [generate(shape, seed=s, **kwargs) for s in np.random.SeedSequence(seed).spawn(count)]

    def joined(field: str) -> np.ndarray | None:
        values = [getattr(p, field) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    centres = joined("centres")
    if centres is not None:
        index = np.repeat(np.arange(count, dtype=float), [len(p.centres) for p in parts])
        centres = np.column_stack([index, centres])
    labels = None
    if parts[0].labels is not None:
        offsets = np.cumsum([0] + [len(p.centres) for p in parts[:-1]])
        labels = np.stack([p.labels + o for p, o in zip(parts, offsets)]).astype(np.int32)
    return Microstructure(np.stack([p.array for p in parts]), centres, joined("radii"), joined("phase"), labels, True)


# ---------------------------------------------------------------------------------------- statistics


def describe(m: Microstructure) -> dict[str, Any]:
    """Achieved statistics (JSON-able): phase fractions, particle diameters per phase, grain classes."""
    values, counts = np.unique(m.array, return_counts=True)
    out: dict[str, Any] = {
        "shape": list(m.array.shape),
        "stack": m.stack,
        "phase_fractions": {str(int(v)): float(c) / m.array.size for v, c in zip(values, counts)},
    }
    if m.labels is not None:  # grains: cell sizes per nominal size class
        k = 2 if m.stack else m.array.ndim
        cells = np.bincount(m.labels.ravel(), minlength=len(m.radii)).astype(float)
        diameter = 2 * (cells / ball_measure(1.0, k)) ** (1 / k)
        out["grain_classes"] = {
            f"{2 * r:g}": {
                "grains": int(sel.sum()),
                "fraction": float(cells[sel].sum()) / m.array.size,
                "equivalent_diameter_mean": float(diameter[sel].mean()),
                "equivalent_diameter_sd": float(diameter[sel].std()),
            }
            for r in np.unique(m.radii)[::-1]
            if (sel := m.radii == r).any()
        }
    elif m.centres is not None:
        out["particles"] = int(len(m.centres))
        if m.radii is not None:
            out["diameters"] = {
                str(int(p)): {
                    "count": int(sel.sum()),
                    "mean": float(2 * m.radii[sel].mean()),
                    "sd": float(2 * m.radii[sel].std()),
                }
                for p in np.unique(m.phase)
                if (sel := m.phase == p).any()
            }
    return out
