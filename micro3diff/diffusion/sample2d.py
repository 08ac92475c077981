"""Plain 2D DDPM/DDIM sampling from a trained model (a check of the 2D model, and training previews), and
``m3d sample2d`` as a function (``write_images``)."""
from __future__ import annotations

import os
from typing import Sequence

import torch

from ..errors import UserError
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


def write_images(checkpoint: str | os.PathLike, out: str | os.PathLike, *, n: int = 16, size: int | None = None,
                 steps: int | None = None, method: str = "ddpm", seed: int = 0, prior: str = "standard",
                 device: str | None = None) -> str:
    """``m3d sample2d``: ``n`` images of ``size`` (default: the training size) from ``checkpoint`` written to
    ``out`` (.png: a tiled picture; .npy / .tif: an (n, S, S) stack of phase labels) with a ``<out>.json``
    sidecar; ``prior``: "standard" or "data" (see ``sample_images``). Returns the line to print."""
    import time
    from pathlib import Path

    from ..checks import require_memory, writable_outputs
    from ..devices import pick_device
    from ..io.arrays import write_array
    from ..io.checkpoint import load_checkpoint
    from ..io.files import provenance, write_json
    from ..io.pictures import image_grid
    from ..phases import to_phases

    if Path(out).suffix.lower() not in (".png", ".npy", ".tif", ".tiff"):
        raise UserError(f"-o must end in .png, .npy, .tif or .tiff, got {out}")
    writable_outputs([Path(out), Path(f"{out}.json")])
    dev = pick_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    size = size if size is not None else int(ckpt.data.get("image_size", 64))
    if size % ckpt.unet.divisor:
        raise UserError(f"--size {size} must be a multiple of {ckpt.unet.divisor} for this model")
    require_memory(n * (ckpt.unet.forward_bytes(size, size) + 16 * ckpt.unet.channels * size * size),
                   f"{n} images of {size}x{size}", dev, "use a smaller -n or --size")
    t0 = time.perf_counter()
    images = sample_images(ckpt.model, NoiseSchedule(ckpt.schedule), n, size, steps, seed, dev, method=method,
                           prior=ckpt.prior if prior == "data" else None)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(images).all():
        raise UserError("the images came out with NaN or infinite values; nothing written")
    write_array(out, image_grid(images) if Path(out).suffix.lower() == ".png" else to_phases(images).cpu().numpy())
    write_json(f"{out}.json", {"model": ckpt.describe(), "n": n, "size": size, "steps": steps, "method": method,
                               "seed": seed, "prior": prior, "seconds": seconds, "provenance": provenance()})
    return f"wrote {out} ({n} images of {size}x{size}, {seconds:.1f} s)"
