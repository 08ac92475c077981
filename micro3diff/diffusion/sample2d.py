"""Plain 2D DDPM/DDIM sampling from a trained model (a check of the 2D model, and training previews)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..ops import fused_step_
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
