"""Plain 2D DDPM/DDIM sampling from a trained model (a check of the 2D model, and training previews)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from .io import write_array
from .ops import fused_step_
from .schedule import NoiseSchedule


@torch.no_grad()
def sample_images(model: torch.nn.Module, schedule: NoiseSchedule, n: int, size: int | tuple[int, int],
                  steps: int | None = None, seed: int = 0, device: torch.device | str = "cpu", *,
                  method: str = "ddpm", eta: float = 0.0,
                  prior: tuple[Sequence[float], Sequence[float]] | None = None) -> torch.Tensor:
    """Draw ``n`` images by reverse diffusion: (n, C, H, W) float32 in about [-1, 1] on ``device``.

    ``steps``: respaced steps (None: all T). Noise comes from a torch.Generator seeded with ``seed``, so the
    result depends only on (model, schedule, n, size, steps, seed, method, prior). ``prior``: per-channel
    (mean, var) of the training data (``Checkpoint.prior``) for the start x_T, see ``NoiseSchedule.prior``.
    """
    H, W = (size, size) if isinstance(size, int) else size
    C = model.config.channels
    device = torch.device(device)
    gen = torch.Generator(device).manual_seed(seed)
    reverse = schedule.steps(steps, method=method, eta=eta)
    z = torch.randn((n, 1, C, H, W), generator=gen, device=device)  # the (V, D, C, H, W) view of a 2D batch
    x = schedule.prior(z, reverse[0].alphabar, *(prior or (None, None)))
    noise = torch.empty_like(x)
    for step in reverse:
        t = torch.full((n,), step.t, device=device, dtype=torch.long)
        eps = model(x.view(n, C, H, W), t).float().view_as(x)
        a = step.denoise
        if a.c_z > 0:
            noise.normal_(generator=gen)
        else:
            noise.zero_()
        fused_step_(x, eps, a.c_x, a.c_eps, a.c_z, noise=noise)
    return x.view(n, C, H, W)


def to_labels(images: torch.Tensor) -> np.ndarray:
    """Phase labels of generated images: threshold at 0 (one channel) or argmax (one-hot).

    images: (n, C, H, W) -> (n, H, W) uint8.
    """
    labels = (images[:, 0] > 0) if images.shape[1] == 1 else images.argmax(1)
    return labels.to(torch.uint8).cpu().numpy()


def image_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile generated images into one uint8 picture (phases as grey levels 0..255, padding mid-grey).

    images: (n, C, H, W) -> (rows*(H+pad)-pad, ncol*(W+pad)-pad).
    """
    labels = to_labels(images)
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
