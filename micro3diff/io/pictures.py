"""Pictures of phase labels: the orthoslice figure of a volume (central yz | xz | xy slices, labelled, with a
scale bar) and the grid of generated 2D images (phases as grey levels).

Planes as the sampler names them (``micro3diff.axes``): yz = the slice at fixed D (image H x W), xz = fixed H
(D x W), xy = fixed W (D x H).
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..phases import to_phases
from .arrays import voxel_size3, write_array
from .files import atomic_path

if TYPE_CHECKING:
    import torch

WIDTH_PX = 1200


def _nice(length: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``length``."""
    k = 10 ** np.floor(np.log10(length))
    return float(max(m * k for m in (1, 2, 5) if m * k <= length))


def write_orthoslices(path: str | os.PathLike, phases: np.ndarray, n_phases: int, *,
                      voxel_size: float | Sequence[float] | None = None, unit: str = "um") -> None:
    """Write a PNG (WIDTH_PX wide) of the central slices of ``phases`` (D, H, W), atomically.

    Axes are in ``unit`` when ``voxel_size`` (d, h, w) is given, with a scale bar on every panel; else in voxels.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    D, H, W = phases.shape
    spacing = voxel_size3(voxel_size)
    d, h, w = spacing or (1.0, 1.0, 1.0)
    label = unit if spacing else "voxels"
    panels = [("yz", f"D = {D // 2}", phases[D // 2], (h, w), ("y (H)", "z (W)")),
              ("xz", f"H = {H // 2}", phases[:, H // 2, :], (d, w), ("x (D)", "z (W)")),
              ("xy", f"W = {W // 2}", phases[:, :, W // 2], (d, h), ("x (D)", "y (H)"))]
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH_PX / 100, 4.4), dpi=100, constrained_layout=True)
    for ax, (plane, at, image, (sr, sc), (rows, cols)) in zip(axes, panels):
        extent = (0, image.shape[1] * sc, image.shape[0] * sr, 0)
        ax.imshow(image, cmap="gray", vmin=0, vmax=max(n_phases - 1, 1), extent=extent, interpolation="nearest")
        ax.set_title(f"{plane} plane (slice {at})")
        ax.set_xlabel(f"{cols} [{label}]")
        ax.set_ylabel(f"{rows} [{label}]")
        if spacing:
            bar = _nice(extent[1] / 4)
            ax.add_artist(AnchoredSizeBar(ax.transData, bar, f"{bar:g} {unit}", "lower right", color="tab:red",
                                          frameon=False, size_vertical=extent[2] / 60))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def image_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile generated images into one uint8 picture (phases as grey levels 0..255, padding mid-grey).

    images: (n, C, H, W) -> (rows*(H+pad)-pad, ncol*(W+pad)-pad).
    """
    labels = to_phases(images).cpu().numpy()
    n, H, W = labels.shape
    K = max(2, images.shape[1])
    grey = (labels.astype(np.int32) * 255 // (K - 1)).astype(np.uint8)
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (H + pad) - pad, ncol * (W + pad) - pad), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[r * (H + pad):r * (H + pad) + H, c * (W + pad):c * (W + pad) + W] = grey[i]
    return out


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int | None = None) -> None:
    """Write ``image_grid(images)`` as a PNG, atomically. images: (n, C, H, W)."""
    write_array(path, image_grid(images, ncol))
