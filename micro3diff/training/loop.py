"""The training loop of the 2D DDPM (paper 3.4, A.1): AdamW, EMA, checkpoints, exact resume, DDP.

Determinism: the training data, timesteps and noise of step s on rank r are pure functions of
(seed, r, s), and the learning rate and EMA decay are functions of s, so a resumed run repeats the
uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..diffusion.schedule import NoiseSchedule
from ..diffusion.unet import UNet
from ..errors import UserError
from ..io.files import provenance, write_json
from .config import TrainConfig, check_resumable, run_config
from .calibrate import x0_moments
from .data import CropSampler, load_training_images
from .run_dir import RunDir, append_log
from .state import load_state, load_state_tensors, state_tensors


def _step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the noise and timesteps of (rank, step)."""
    return int(np.random.SeedSequence([seed, rank, step, 2]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _setup_distributed(device: torch.device | str | None) -> tuple[int, int, torch.device]:
    """(rank, world, device); initialises torch.distributed (NCCL on GPU, gloo on CPU) under torchrun."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for every parameter; buffers copied."""
    e_params, m_params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def train(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True) -> Path:
    """Train (or, with ``resume``, continue up to ``config.steps``) and return the final ``model.safetensors``.

    Works unchanged under ``torchrun --nproc_per_node N``: each rank trains on its own data shard with
    DDP; rank 0 alone writes. On resume, the run continues from its newest complete checkpoint.
    """
    from tqdm.auto import tqdm

    run = RunDir(run_dir)
    run.check(resume)
    images = load_training_images(config.data)
    rank, world, device = _setup_distributed(device)
    try:
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        model = UNet(config.unet).to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        ema = copy.deepcopy(model).requires_grad_(False).eval()
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr_at(0), betas=(0.9, 0.999),
                                weight_decay=config.weight_decay)
        start = 0
        if resume:
            start, state_path = run.latest_state()
            tensors, meta = load_state(state_path)
            try:
                load_state_tensors(tensors, meta, model, ema, opt)
            except (RuntimeError, KeyError, ValueError) as exc:
                raise UserError(f"{state_path} does not match this run's config ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0]})") from None
            if start > config.steps:
                raise UserError(f"the run is already at step {start}; --steps {config.steps} would go backwards")
        if rank == 0:
            run.clean_partials()
            run.trim_log(start)
            write_json(run.root / "config.json", {"train": config, "world_size": world, "provenance": provenance()})
        net = model
        if world > 1:
            ids = [device] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        schedule = NoiseSchedule(config.schedule)
        sampler = CropSampler(images, config.batch, config.seed, rank, world)
        data_info = images.checkpoint_data(config.plane)
        autocast = device.type == "cuda" and config.bf16
        gen = torch.Generator(device)
        bar = tqdm(total=config.steps, initial=start, disable=not (progress and rank == 0), unit="step",
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        window_start, window_loss, window_n = t0, torch.zeros((), device=device), 0
        for step in range(start, config.steps):
            x0 = images.batch(sampler.crops(step)).to(device, non_blocking=True)
            gen.manual_seed(_step_seed(config.seed, rank, step))
            t = torch.randint(0, schedule.T, (x0.shape[0],), generator=gen, device=device)
            noise = torch.randn(x0.shape, generator=gen, device=device)
            x_t, target = schedule.q_sample(x0, t, noise)
            if config.channels_last:
                x_t = x_t.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                pred = net(x_t, t)
            loss = F.mse_loss(pred.float(), target)  # eq. 15: || eps - eps_theta(x_t, t) ||^2 (or v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            for group in opt.param_groups:
                group["lr"] = config.lr_at(step)
            opt.step()
            _ema_update(ema, model, config.ema_decay_at(step))
            window_loss += loss.detach()
            window_n += 1
            done = step + 1
            bar.update(1)
            if done % config.log_every == 0 or done == config.steps:
                if world > 1:
                    dist.all_reduce(window_loss)
                now = time.perf_counter()
                row = {"step": done, "loss": float(window_loss) / (window_n * world), "lr": config.lr_at(step),
                       "ema_decay": config.ema_decay_at(step),
                       "images_per_s": window_n * config.batch * world / (now - window_start),
                       "elapsed_s": now - t0}
                window_start, window_n = now, 0
                window_loss.zero_()
                if rank == 0:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}")
                    append_log(run.log, row)
            pause = time.perf_counter()  # time spent writing is left out of images/s
            if rank == 0 and (done % config.save_every == 0 or done == config.steps):
                if done == config.steps:  # the final model carries its x0-hat moments (volume-fraction control)
                    data_info = {**data_info, "x0_moments": x0_moments(ema, schedule, images, config.seed)}
                tensors, meta = state_tensors(model, ema, opt)
                training = {"step": done, "steps": config.steps, "batch": config.batch, "world_size": world,
                            "lr": config.lr, "ema": config.ema, "seed": config.seed, "preset": config.preset}
                run.write_checkpoint(done, ema.state_dict(), tensors,
                                     {**meta, "step": done, "world_size": world, "config": config.to_dict()},
                                     config, data_info, training)
            if rank == 0 and config.sample_every and done % config.sample_every == 0:
                from ..diffusion.sample2d import sample_images
                from ..io.pictures import save_grid

                imgs = sample_images(ema, schedule, config.sample_n, config.data.image_size, config.sample_steps,
                                     seed=config.seed, device=device)
                save_grid(imgs, run.root / "samples" / f"step_{done:07d}.png")
            window_start += time.perf_counter() - pause
        bar.close()
        if world > 1:
            dist.barrier()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return run.root / "model.safetensors"


def start(out: str | os.PathLike, data: tuple[str, ...] = (), given: set[str] = frozenset(), *, resume: bool = False,
          device: str | None = None, progress: bool = True, **options) -> Path:
    """``m3d train``: the run's config (``config.run_config``; with ``resume`` from the run folder ``out``), torch's
    threads, a memory check for the batches, then ``train``. Returns the final ``model.safetensors``."""
    from ..checks import require_memory
    from ..devices import pick_device

    stored = None
    if resume:
        run = RunDir(out)
        run.check(resume=True)
        check_resumable(given)
        stored = run.stored_config()
    config = run_config(stored, tuple(str(Path(p).absolute()) for p in data), **options)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dev, side = pick_device(device), config.data.image_size
    require_memory(3 * config.batch * config.unet.forward_bytes(side, side),  # activations kept for backward
                   f"training on batches of {config.batch} {side}x{side} crops", dev,
                   "use a smaller --batch, --image-size or --model-dim")
    return train(config, out, resume=resume, device=dev, progress=progress)
