"""``m3d train`` (train a 2D DDPM on micrographs) and ``m3d sample2d`` (draw 2D images from a checkpoint)."""
from __future__ import annotations

import os

import click

from ..errors import UserError
from ..axes import PLANES
from ..diffusion.schedule import DEFAULT_SCHEDULE, PAPER_SCHEDULE, ScheduleConfig
from ._common import pick_device, quiet_option, say, show_progress, user_errors, voxel_size_option

SCHEDULE_CHOICES = {"zsnr": DEFAULT_SCHEDULE, "paper": PAPER_SCHEDULE,
                    "cosine": ScheduleConfig(kind="cosine", prediction="v")}

# Options that may change when a run is resumed; everything else comes from the run's config.json.
RESUMABLE = {"steps", "save_every", "keep", "log_every", "sample_every", "device", "threads", "progress", "resume",
             "out", "data"}


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
@click.option("--preset", type=click.Choice(["tiny", "small", "paper"]), default="small", show_default=True,
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
@click.option("--axis", type=click.Choice(["0", "1", "2", "all"]), default="0", show_default=True,
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
    import dataclasses
    from pathlib import Path

    import torch

    from ..training import config as T_config, loop as T_loop, run_dir as T_run
    from ..checks import require_memory
    from ..training.data import DataConfig

    data = tuple(str(Path(p).absolute()) for p in data)
    changes = {"steps": steps, "save_every": save_every, "keep": keep, "log_every": log_every,
               "sample_every": sample_every, "threads": threads}
    if resume:
        run = T_run.RunDir(out)
        run.check(resume=True)
        given = {p for p in ctx.params if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE}
        if given - RESUMABLE:
            raise UserError(f"--resume continues with the run's stored settings; only --steps, --save-every, --keep, "
                            f"--log-every, --sample-every, --device and --threads may change (got "
                            f"{', '.join('--' + g.replace('_', '-') for g in sorted(given - RESUMABLE))})")
        config = run.stored_config()
        if data and tuple(data) != config.data.paths:
            raise UserError(f"--resume uses the run's data {list(config.data.paths)}; omit DATA or give the same paths")
        config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    else:
        if not data:
            raise UserError("no training data given (DATA: image files, 3D volumes or folders)")
        data_cfg = DataConfig(paths=data, image_size=image_size, axis=axis, threshold=threshold, phases=phases,
                              augment=not no_augment, voxel_size=voxel_size, unit=unit)
        config = T_config.make_config(data_cfg, preset, model_dim=model_dim, dim_mults=_dim_mults(dim_mults), batch=batch,
                               schedule=SCHEDULE_CHOICES[schedule], channels_last=fast,
                               lr=lr, warmup=warmup, ema=ema, plane=plane, seed=seed, **changes)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dev, side = pick_device(device), config.data.image_size
    require_memory(3 * config.batch * config.unet.forward_bytes(side, side),  # activations kept for backward
                   f"training on batches of {config.batch} {side}x{side} crops", dev,
                   "use a smaller --batch, --image-size or --model-dim")
    path = T_loop.train(config, out, resume=resume, device=dev, progress=progress and show_progress())
    if os.environ.get("RANK", "0") == "0":
        say(f"wrote {path}", err=True)


@click.command()
@click.argument("checkpoint")
@click.option("-n", "n", type=int, default=16, show_default=True, help="Number of images.")
@click.option("--size", type=int, help="Image side (default: the training image size).")
@click.option("--steps", type=int, help="Respaced sampling steps (default: all T).")
@click.option("--method", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prior", "prior_mode", type=click.Choice(["standard", "data"]), default="standard", show_default=True,
              help="x_T from N(0, I) or from q(x_T) on the training data's phase fractions (as m3d sample).")
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="grid.png (a tiled picture) or .npy/.tif (an (n, S, S) stack of phase labels).")
@quiet_option
@user_errors
def sample2d(checkpoint: str, n: int, size: int | None, steps: int | None, method: str, seed: int,
             prior_mode: str, device: str | None, out: str) -> None:
    """Draw N 2D images from CHECKPOINT (a file or shipped model name) by plain reverse diffusion."""
    import time
    from pathlib import Path

    import torch

    from ..io.checkpoint import load_checkpoint
    from ..checks import number, require_memory, writable_outputs
    from ..io.files import provenance, write_json
    from ..io.arrays import write_array
    from ..diffusion.sample2d import sample_images
    from ..io.pictures import image_grid
    from ..phases import to_phases
    from ..diffusion.schedule import NoiseSchedule

    number("-n", n, lo=1)
    number("--size", size, lo=1)
    number("--seed", seed, lo=0)
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
                           prior=ckpt.prior if prior_mode == "data" else None)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(images).all():
        raise UserError("the images came out with NaN or infinite values; nothing written")
    write_array(out, image_grid(images) if Path(out).suffix.lower() == ".png" else to_phases(images).cpu().numpy())
    write_json(f"{out}.json", {"model": ckpt.describe(), "n": n, "size": size, "steps": steps, "method": method,
                               "seed": seed, "prior": prior_mode, "seconds": seconds, "provenance": provenance()})
    say(f"wrote {out} ({n} images of {size}x{size}, {seconds:.1f} s)", err=True)
