"""Placement geometry of the synthetic generators: random sequential addition of non-overlapping particles, the
Boolean model of overlapping ones, the voxels a particle covers, and Laguerre cells. Coordinates are array
indices (voxel ``i`` has its centre at ``i``); a periodic structure wraps with period ``shape``."""
from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import UserError

BATCH = 32  # candidate positions tried at once by random sequential addition
MAX_ATTEMPTS = 20_000  # candidate positions per particle before random sequential addition gives up
CHUNK = 1 << 20  # stencil points rendered at once


def ball_measure(radius: np.ndarray | float, ndim: int) -> np.ndarray:
    """Area (2D) or volume (3D) of a disk/ball of ``radius``."""
    r = np.asarray(radius, dtype=float)
    return np.pi * r**2 if ndim == 2 else 4.0 / 3.0 * np.pi * r**3


def min_image(delta: np.ndarray, period: np.ndarray | None) -> np.ndarray:
    """Coordinate differences (..., k) folded to the nearest periodic image (unchanged if not periodic)."""
    return delta if period is None else delta - period * np.round(delta / period)


def covered(
    centres: np.ndarray, semi_axes: np.ndarray, shape: tuple[int, ...], periodic: bool
) -> Iterator[np.ndarray]:
    """Yield flat indices of the voxels whose centres lie inside the ellipsoids, a chunk of particles at a time.

    centres, semi_axes: (n, k). Voxel x is inside particle i if ``sum(((x - c_i) / a_i)^2) <= 1``.
    """
    k = len(shape)
    reach = np.ceil(semi_axes.max(axis=0)).astype(np.int64)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 2) for r in reach], indexing="ij"), -1).reshape(-1, k)
    per_chunk = max(1, CHUNK // len(offsets))
    for start in range(0, len(centres), per_chunk):
        c, a = centres[start : start + per_chunk], semi_axes[start : start + per_chunk]
        pos = np.floor(c).astype(np.int64)[:, None, :] + offsets[None]  # (n, m, k)
        inside = (((pos - c[:, None, :]) / a[:, None, :]) ** 2).sum(-1) <= 1.0
        pos = pos[inside]
        if periodic:
            pos %= shape
        else:
            pos = pos[np.all((pos >= 0) & (pos < shape), axis=1)]
        yield np.ravel_multi_index(tuple(pos.T), shape)


def free_spot(
    rho: float,
    centres: np.ndarray,
    rhos: np.ndarray,
    aspect: np.ndarray,
    shape: tuple[int, ...],
    periodic: bool,
    rng: np.random.Generator,
    max_attempts: int,
) -> np.ndarray | None:
    """A uniformly drawn centre (k,) where particle ``rho`` overlaps none of ``centres`` (n, k), or None.

    Particle i is ``{x: |(x - c_i) / aspect| <= rho_i}``; two overlap iff ``|(c_i - c_j) / aspect| <= rho_i + rho_j``
    (minimum periodic image). Tries ``max_attempts`` positions, ``BATCH`` at a time.
    """
    period = np.asarray(shape, dtype=float) if periodic else None
    for _ in range(0, max_attempts, BATCH):
        candidates = rng.random((BATCH, len(shape))) * shape - (0.0 if periodic else 0.5)
        gap = np.linalg.norm(min_image(candidates[:, None] - centres[None], period) / aspect, axis=-1)
        free = np.all(gap > rho + rhos, axis=1)
        if free.any():
            return candidates[np.argmax(free)]
    return None


def rsa(
    shape: tuple[int, ...],
    targets: np.ndarray,
    order: Sequence[int],
    draw: Callable[[int], float],
    aspect: np.ndarray,
    periodic: bool,
    rng: np.random.Generator,
    max_attempts: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random sequential addition of non-overlapping particles until each phase reaches its voxel fraction.

    targets: (K,) voxel fractions; phase p has array value p + 1 and sizes ``rho = draw(p)`` (see
    ``free_spot``). Phases are filled one after the other in ``order`` (big particles first pack best).
    """
    size = math.prod(shape)
    volume = np.zeros(size, np.uint8)
    counts = np.zeros(len(targets))
    centres: list[np.ndarray] = []
    rhos: list[float] = []
    phases: list[int] = []
    for p in order:
        while counts[p] < targets[p] * size:
            rho = draw(p)
            placed = np.reshape(centres, (-1, len(shape)))
            spot = free_spot(rho, placed, np.asarray(rhos), aspect, shape, periodic, rng, max_attempts)
            if spot is None:
                raise UserError(
                    f"cannot place more non-overlapping particles after {max_attempts} attempts: volume fraction "
                    f"{counts.sum() / size:.3f} reached of {targets.sum():.3f} requested; ask for less"
                )
            centres.append(spot)
            rhos.append(rho)
            phases.append(p + 1)
            for flat in covered(spot[None], rho * aspect[None], shape, periodic):
                volume[flat] = p + 1
                counts[p] += len(flat)
    return volume.reshape(shape), np.array(centres), np.array(rhos), np.array(phases, np.uint8)


def boolean_model(
    shape: tuple[int, ...], semi_axes: np.ndarray, covered_fraction: float, periodic: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean model of identical aligned ellipsoids (semi_axes (k,)) covering ``covered_fraction`` on average.

    Poisson germs with intensity ``lambda = -ln(1 - f) / |E|`` so ``P(x uncovered) = exp(-lambda |E|) = 1 - f``.
    Returns (covered uint8 mask of ``shape``, centres (n, k)). Without periodicity, germs within reach
    outside the window are included so the window sees a stationary pattern.
    """
    intensity = -math.log1p(-covered_fraction) / (math.prod(semi_axes) * ball_measure(1.0, len(shape)))
    pad = np.zeros(len(shape)) if periodic else np.ceil(semi_axes)
    extent = np.asarray(shape) + 2 * pad
    centres = rng.random((rng.poisson(intensity * math.prod(extent)), len(shape))) * extent - pad
    mask = np.zeros(math.prod(shape), np.uint8)
    for flat in covered(centres, np.broadcast_to(semi_axes, centres.shape), shape, periodic):
        mask[flat] = 1
    return mask.reshape(shape), centres


def seeds(radii: np.ndarray, shape: tuple[int, ...], periodic: bool, rng: np.random.Generator) -> np.ndarray:
    """Centres (n, k) of non-overlapping balls of ``radii``, placed in the given order; a ball that finds no
    free spot is put at a random one (seeds only need to be spread, not disjoint)."""
    centres = np.empty((len(radii), len(shape)))
    ones = np.ones(len(shape))
    for n, r in enumerate(radii):
        spot = free_spot(r, centres[:n], radii[:n], ones, shape, periodic, rng, MAX_ATTEMPTS)
        centres[n] = rng.random(len(shape)) * shape if spot is None else spot
    return centres


def laguerre(centres: np.ndarray, weights: np.ndarray, shape: tuple[int, ...], periodic: bool) -> np.ndarray:
    """Owner (argmin of the power distance ``|x - c_i|^2 - w_i``) of every pixel: int array of ``shape``.

    Lifting seeds to ``(c_i, sqrt(max w - w_i))`` and pixels to ``(x, 0)`` turns the power distance into a
    Euclidean one plus a constant, so a k-d tree nearest-neighbour query finds the owner.
    """
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        raise UserError("polycrystals need scipy: pip install scipy") from None

    lift = np.sqrt(weights.max() - weights)
    seeds = np.column_stack([centres, lift])
    pixels = np.column_stack([np.indices(shape).reshape(len(shape), -1).T, np.zeros(math.prod(shape))])
    box = None
    if periodic:  # the lift axis gets a period too large to ever wrap
        box = np.r_[shape, 4 * lift.max() + 1.0]
        seeds %= box
    return cKDTree(seeds, boxsize=box).query(pixels)[1].reshape(shape)
