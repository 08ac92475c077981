"""Per-plane (anisotropic) data: the slices each plane's model sees in the sampler, and per-axis anisotropy.

The sampler (``micro3diff.sampler``) stores a volume (D, H, W) so that the current plane's slices are the
leading axis; one rotation R: (d, h, w) -> (h, w, d) moves yz -> xz -> xy. So the model of plane ``p``
sees the images of ``volume`` permuted by R^k (k = 0, 1, 2 for yz, xz, xy):

* yz: slices at fixed d, images (H, W)
* xz: slices at fixed h, images (W, D)   (transposed with respect to ``volume[:, h, :]``)
* xy: slices at fixed w, images (D, H)

A per-plane model trained without dihedral augmentation (``m3d train VOLUME --axis K --plane P --no-augment``,
K = 0, 1, 2 for yz, xz, xy) sees exactly these images: ``micro3diff.data`` slices volumes the same way.
"""
from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .data import plane_slices
from .errors import UserError
from .axes import PLANES


def plane_stack(volume: np.ndarray, plane: str) -> np.ndarray:
    """(D, H, W) -> (N, h, w) contiguous stack of the slices plane ``plane``'s model sees in the sampler."""
    if plane not in PLANES:
        raise UserError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise UserError(f"plane_stack needs a 3D volume (D, H, W), got shape {volume.shape}")
    return np.ascontiguousarray(plane_slices(volume, PLANES.index(plane)))


def axis_lineal_path(volumes: np.ndarray | torch.Tensor, z: int, *, phase: int | None = None) -> list[float]:
    """L(z) along each array axis (D, H, W) of one volume (D, H, W) or the mean over a batch (B, D, H, W)."""
    x = torch.as_tensor(np.asarray(volumes))
    parts = metrics.lineal_path(x, z, ndim=3, phase=phase).parts  # (B, 3, z + 1) or (3, z + 1)
    return [float(v) for v in parts.reshape(-1, 3, z + 1).mean(0)[:, z]]
