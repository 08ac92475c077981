"""``m3d train``: train a 2D DDPM on micrographs (``training.loop.start``)."""
from __future__ import annotations

import os

import click

from ..axes import PLANES
from ..diffusion.schedule import DEFAULT_SCHEDULE, PAPER_SCHEDULE, ScheduleConfig
from ..errors import UserError
from ..training.data import AXIS_CHOICES
from ._common import quiet_option, say, show_progress, user_errors, voxel_size_option

SCHEDULE_CHOICES = {"zsnr": DEFAULT_SCHEDULE, "paper": PAPER_SCHEDULE,
                    "cosine": ScheduleConfig(kind="cosine", prediction="v")}

def _dim_mults(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        mults = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise UserError(f"--dim-mults must be comma-separated integers like 1,2,4, got {value!r}") from None
    if not mults or min(mults) < 1:
        raise UserError(f"--dim-mults must be positive integers, got {value!r}")
    return mults


@click.command()
@click.argument("data", nargs=-1, type=click.Path())
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Run folder (checkpoints, log, config).")
@click.option("--image-size", type=int, default=64, show_default=True, help="Training crop side S.")
@click.option("--preset", type=click.Choice(["tiny", "cpu", "small", "paper"]), default="small", show_default=True,
              help="U-Net size and training defaults.")
@click.option("--schedule", "schedule", type=click.Choice(list(SCHEDULE_CHOICES)), default="zsnr", show_default=True,
              help="Noise schedule and prediction: zsnr (linear betas rescaled to zero terminal SNR, "
                   "v-prediction; the start N(0, I) is exact), paper (linear 1e-4..1e-2, eps-prediction), "
                   "cosine (v-prediction).")
@click.option("--model-dim", type=int, help="U-Net base width (overrides the preset).")
@click.option("--dim-mults", help="U-Net level multipliers, e.g. 1,2,4 (overrides the preset).")
@click.option("--steps", type=int, help="Total optimizer steps.")
@click.option("--batch", type=int, help="Batch size per process.")
@click.option("--lr", type=float, help="Peak learning rate (default 3e-4).")
@click.option("--warmup", type=int, help="Linear warm-up steps.")
@click.option("--ema", type=float, help="EMA decay, e.g. 0.999.")
@click.option("--save-every", type=int, help="Checkpoint period in steps.")
@click.option("--keep", type=int, help="Checkpoints kept.")
@click.option("--log-every", type=int, help="Log period in steps.")
@click.option("--sample-every", type=int, help="Write a 2D sample grid every N steps (0: never).")
@click.option("--axis", type=click.Choice(AXIS_CHOICES), default="0", show_default=True,
              help="Slice 3D files along this axis (0, 1, 2: the yz, xz, xy planes, oriented as the sampler "
                   "shows them) or all three. An (N, H, W) stack of images is axis 0.")
@click.option("--threshold", help="Binarise non-binary images at this value, or 'otsu'.")
@click.option("--phases", type=int, default=2, show_default=True, help="K >= 3: one-hot multiphase training.")
@click.option("--no-augment", is_flag=True, help="Disable 8-fold dihedral augmentation.")
@click.option("--plane", type=click.Choice(PLANES),
              help="Record the plane of a per-plane (anisotropic) model; consider --no-augment.")
@click.option("--seed", type=int, help="Seed of weights, data order and noise (default 0).")
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--threads", type=int, help="CPU threads for torch (default: torch's choice).")
@click.option("--fast/--no-fast", "fast", default=True, show_default=True,
              help="channels_last weights and batches (faster convolutions; --no-fast: the reference layout).")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its newest checkpoint.")
@voxel_size_option(" (default: the one the TIFFs' ImageJ / resolution tags record); stored in the checkpoint")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar (on a terminal).")
@quiet_option
@click.pass_context
@user_errors
def train(ctx: click.Context, data: tuple[str, ...], out: str, image_size: int, preset: str, schedule: str,
          model_dim: int | None,
          dim_mults: str | None, steps: int | None, batch: int | None, lr: float | None, warmup: int | None,
          ema: float | None, save_every: int | None, keep: int | None, log_every: int | None,
          sample_every: int | None, axis: str, threshold: str | None, phases: int, no_augment: bool,
          plane: str | None, seed: int | None, device: str | None, threads: int | None, fast: bool, resume: bool,
          voxel_size: tuple[float, float, float] | None, unit: str | None, progress: bool) -> None:
    """Train a 2D DDPM on binary (or K-phase) micrographs in DATA (files or folders).

    \b
    Example:
      m3d train volume.tif --axis all --image-size 64 --preset small -o runs/spheres
      m3d train --resume -o runs/spheres --steps 40000
    Under torchrun (--nproc_per_node N) every process trains on its own shard; rank 0 writes.
    """
    from ..training.loop import start

    given = {p for p in ctx.params if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE}
    path = start(out, data, given, resume=resume, device=device, progress=progress and show_progress(),
                 image_size=image_size, axis=axis, threshold=threshold, phases=phases, augment=not no_augment,
                 voxel_size=voxel_size, unit=unit, preset=preset, model_dim=model_dim, dim_mults=_dim_mults(dim_mults),
                 batch=batch, schedule=SCHEDULE_CHOICES[schedule], channels_last=fast, lr=lr, warmup=warmup, ema=ema,
                 plane=plane, seed=seed, steps=steps, save_every=save_every, keep=keep, log_every=log_every,
                 sample_every=sample_every, threads=threads)
    if os.environ.get("RANK", "0") == "0":
        say(f"wrote {path}", err=True)
