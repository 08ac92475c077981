"""Training the 2D epsilon-prediction DDPM (paper 3.4, A.1): EMA, checkpoints, exact resume, DDP.

Run directory layout (only rank 0 writes; every file is written atomically):
```
RUN_DIR/config.json                          TrainConfig + world size + provenance
RUN_DIR/log.csv                              step, loss, lr, ema_decay, images_per_s, elapsed_s
RUN_DIR/model.safetensors (+ .json)          EMA weights of the newest checkpoint (checkpoint.py format)
RUN_DIR/latest.json                          {"step", "model", "state"}: the newest complete checkpoint
RUN_DIR/checkpoints/model_<step>.safetensors EMA weights (+ .json), the last ``keep`` kept
RUN_DIR/checkpoints/state_<step>.safetensors training state for --resume (+ .json, same content as its header)
RUN_DIR/samples/step_<step>.png              optional 2D sample grids (EMA model)
```
A state file holds tensors ``model/<name>`` (raw weights), ``ema/<name>``, ``optim/<param>/<key>``,
``rng/torch``, ``rng/cuda/<i>`` and, in its header, JSON with the step, the config and the optimizer's
non-tensor state. ``latest.json`` is replaced only after both files of a checkpoint are complete, so a run
killed at any moment resumes from its last complete checkpoint.

Determinism: the training data, timesteps and noise of step s on rank r are pure functions of
(seed, r, s), and the learning rate and EMA decay are functions of s, so a resumed run repeats the
uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import save_checkpoint
from .data import CropSampler, DataConfig, load_training_images
from .axes import PLANES
from .errors import UserError
from .io import atomic_path, provenance, write_json
from .schedule import DEFAULT_SCHEDULE, NoiseSchedule, ScheduleConfig
from .unet import UNET_PRESETS, UNet, UNetConfig

STATE_FORMAT = "micro3diff-train-state/1"
LOG_FIELDS = ("step", "loss", "lr", "ema_decay", "images_per_s", "elapsed_s")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. ``batch`` is per process (global batch = batch * world size).

    lr: AdamW peak rate after ``warmup`` linear warm-up steps, then constant (A.1). ema: EMA decay, used as
    min(ema, (1 + s) / (10 + s)) at step s. save_every: checkpoint period in steps (and at the end); keep:
    checkpoints kept. sample_every: 2D sample grid period (0: never). bf16: autocast on CUDA only.
    channels_last: weights and batches in NHWC memory format (faster convolutions, same loss up to rounding).
    plane: recorded in the checkpoint for per-plane (anisotropic) models. threads: CPU threads for torch (None:
    torch's choice), stored so that a resumed run computes exactly as the first.
    """

    data: DataConfig
    unet: UNetConfig = field(default_factory=lambda: UNET_PRESETS["small"])
    schedule: ScheduleConfig = DEFAULT_SCHEDULE
    steps: int = 20000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 1000
    weight_decay: float = 0.0
    ema: float = 0.999
    grad_clip: float = 1.0
    save_every: int = 1000
    keep: int = 3
    log_every: int = 50
    sample_every: int = 0
    sample_n: int = 16
    sample_steps: int = 100
    seed: int = 0
    bf16: bool = True
    plane: str | None = None
    preset: str | None = None
    channels_last: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.unet.channels != self.data.channels:
            raise UserError(f"the U-Net has {self.unet.channels} channels but the data has {self.data.channels}")
        if self.data.image_size % self.unet.divisor:
            raise UserError(f"image size {self.data.image_size} must be a multiple of {self.unet.divisor} "
                            f"for this U-Net ({len(self.unet.dim_mults)} levels)")
        if min(self.steps, self.batch, self.save_every, self.keep, self.log_every) < 1 or self.sample_every < 0:
            raise UserError("steps, batch, save_every, keep and log_every must be >= 1, sample_every >= 0")
        if (self.threads is not None and self.threads < 1) or self.seed < 0:
            raise UserError(f"need threads >= 1 and seed >= 0, got threads={self.threads}, seed={self.seed}")
        if not (0.0 <= self.ema < 1.0) or not 0 < self.lr < math.inf or self.warmup < 0:
            raise UserError(f"need 0 <= ema < 1, lr > 0, warmup >= 0 (got ema={self.ema}, lr={self.lr}, "
                            f"warmup={self.warmup})")
        if self.plane is not None and self.plane not in PLANES:
            raise UserError(f"plane must be yz, xz or xy, got {self.plane!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        data = d.pop("data")
        return cls(data=DataConfig(**{**data, "paths": tuple(data["paths"])}), unet=UNetConfig.from_dict(d.pop("unet")),
                   schedule=ScheduleConfig(**d.pop("schedule")), **d)

    def lr_at(self, step: int) -> float:
        """Learning rate of 0-based ``step``: linear warm-up to ``lr``, then constant."""
        return self.lr * min(1.0, (step + 1) / self.warmup) if self.warmup else self.lr

    def ema_decay_at(self, step: int) -> float:
        """EMA decay after 0-based ``step``: small early (the average forgets the random init), then ``ema``."""
        return min(self.ema, (1 + step) / (10 + step))


# Preset -> U-Net preset and training defaults (individual options override them).
TRAIN_PRESETS: dict[str, dict] = {
    "tiny": dict(unet="tiny", steps=2000, batch=16, warmup=100, ema=0.995, save_every=500, log_every=10),
    "cpu": dict(unet="cpu", steps=2000, batch=16, warmup=100, ema=0.995, save_every=500, log_every=10),
    "small": dict(unet="small", steps=20000, batch=32, warmup=1000, ema=0.999, save_every=1000, log_every=50),
    # A.1: Adam, lr 3e-4, 10000 warm-up steps, batch 64 (3.4: 32 per GPU), 50000 steps.
    "paper": dict(unet="paper", steps=50000, batch=32, warmup=10000, ema=0.9999, save_every=5000, log_every=100),
}


def make_config(data: DataConfig, preset: str = "small", *, model_dim: int | None = None,
                dim_mults: tuple[int, ...] | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from a preset, with U-Net width/levels and any TrainConfig field overridden (None: keep).

    Changing the number of levels puts attention on the deeper half (at least the deepest level).
    """
    if preset not in TRAIN_PRESETS:
        raise UserError(f"unknown preset {preset!r} (use one of {', '.join(TRAIN_PRESETS)})")
    fields = {**TRAIN_PRESETS[preset]}
    unet = UNET_PRESETS[fields.pop("unet")]
    changes: dict = {"channels": data.channels}
    if model_dim is not None:
        changes["dim"] = model_dim
    if dim_mults is not None and tuple(dim_mults) != unet.dim_mults:
        n = len(dim_mults)
        changes.update(dim_mults=tuple(dim_mults), attention=tuple(i >= n - max(1, n // 2) for i in range(n)))
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(data=data, unet=dataclasses.replace(unet, **changes), preset=preset, **fields)


# ---------------------------------------------------------------------------------------------- state files

def _step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the noise and timesteps of (rank, step)."""
    return int(np.random.SeedSequence([seed, rank, step, 2]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def state_tensors(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Flatten weights, EMA, optimizer and RNG state into (named tensors, JSON-able dict)."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    opt_sd = opt.state_dict()
    scalars: dict = {}
    for pid, st in opt_sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim/{pid}/{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"param_groups": opt_sd["param_groups"], "optim_scalars": scalars}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta


def load_state_tensors(tensors: dict, meta: dict, model: torch.nn.Module, ema: torch.nn.Module,
                       opt: torch.optim.Optimizer) -> None:
    """Inverse of ``state_tensors``: restore weights, EMA, optimizer state and RNG states in place."""
    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model/"))
    ema.load_state_dict(part("ema/"))
    state: dict = {}
    for key, val in part("optim/").items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = val
    for pid, st in meta["optim_scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[f"rng/cuda/{i}"] for i in range(len(part("rng/cuda/")))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def save_state(path: Path, tensors: dict, meta: dict) -> None:
    """Write a training state (safetensors, JSON in the header) and its ``.json`` twin, atomically."""
    from safetensors.torch import save_file

    meta = {"format": STATE_FORMAT, **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"micro3diff_state": json.dumps(meta)})
    write_json(path.with_suffix(path.suffix + ".json"), meta)


def load_state(path: Path) -> tuple[dict, dict]:
    """Read a training state file: (tensors, metadata). UserError if it is not one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["micro3diff_state"])
        tensors = load_file(str(path))
    except Exception as exc:  # corrupt/truncated/foreign files raise many types
        raise UserError(f"{path} is not a readable training state ({type(exc).__name__}: {exc})") from None
    if meta.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: unsupported training state format {meta.get('format')!r}")
    return tensors, meta


class RunDir:
    """The files of one training run (see the module docstring). Only rank 0 writes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.ckpt = self.root / "checkpoints"
        self.latest = self.root / "latest.json"
        self.log = self.root / "log.csv"

    def check(self, resume: bool) -> None:
        """UserError if the run dir cannot be used: unwritable, already a run (fresh), nothing to resume."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"run dir {self.root} exists and is not a folder")
        existing = self.root.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"cannot create run dir {self.root}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"run dir {self.root} is not writable")
        if resume and not self.latest.is_file():
            raise UserError(f"nothing to resume in {self.root} (no latest.json); start a run without --resume")
        if not resume and self.latest.is_file():
            raise UserError(f"{self.root} already holds a training run; use --resume to continue it or pick "
                            f"another output folder")

    def latest_state(self) -> tuple[int, Path]:
        """(step, state file) of the newest complete checkpoint."""
        try:
            info = json.loads(self.latest.read_text())
            return int(info["step"]), self.root / info["state"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.latest} is unreadable ({exc}); cannot resume") from None

    def stored_config(self) -> TrainConfig:
        """The config a run was started with (for --resume)."""
        try:
            return TrainConfig.from_dict(json.loads((self.root / "config.json").read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.root / 'config.json'} is unreadable ({exc}); cannot resume") from None

    def clean_partials(self) -> None:
        """Remove temporary files left by a killed writer (atomic_path names them ``.<name>.*.part*``)."""
        for folder in (self.root, self.ckpt, self.root / "samples"):
            if folder.is_dir():
                for p in folder.glob(".*.part*"):
                    p.unlink(missing_ok=True)

    def write_checkpoint(self, step: int, ema_sd: dict, tensors: dict, meta: dict, config: TrainConfig,
                         data: dict, training: dict) -> Path:
        """Write model_<step>, state_<step>, the stable copy, then latest.json; prune. Returns the model path."""
        model_path = self.ckpt / f"model_{step:07d}.safetensors"
        state_path = self.ckpt / f"state_{step:07d}.safetensors"
        save_checkpoint(model_path, ema_sd, config.unet, config.schedule, data, training)
        save_state(state_path, tensors, meta)
        for suffix in ("", ".json"):
            with atomic_path(self.root / f"model.safetensors{suffix}") as tmp:
                shutil.copyfile(f"{model_path}{suffix}", tmp)
        write_json(self.latest, {"step": step, "model": str(model_path.relative_to(self.root)),
                                 "state": str(state_path.relative_to(self.root))})
        for kind in ("model", "state"):
            for old in sorted(self.ckpt.glob(f"{kind}_*.safetensors"))[:-config.keep]:
                old.unlink(missing_ok=True)
                Path(f"{old}.json").unlink(missing_ok=True)
        return model_path

    def trim_log(self, step: int) -> None:
        """Drop log rows after ``step`` (a fresh start, or rows of a run killed after its last checkpoint)."""
        if not self.log.is_file():
            return
        text = self.log.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a row cut short by a kill
        rows = [r for r in csv.DictReader(lines) if int(r["step"]) <= step]
        with atomic_path(self.log) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)


# ---------------------------------------------------------------------------------------------- the loop

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
                    _append_log(run.log, row)
            pause = time.perf_counter()  # time spent writing is left out of images/s
            if rank == 0 and (done % config.save_every == 0 or done == config.steps):
                tensors, meta = state_tensors(model, ema, opt)
                training = {"step": done, "steps": config.steps, "batch": config.batch, "world_size": world,
                            "lr": config.lr, "ema": config.ema, "seed": config.seed, "preset": config.preset}
                run.write_checkpoint(done, ema.state_dict(), tensors,
                                     {**meta, "step": done, "world_size": world, "config": config.to_dict()},
                                     config, data_info, training)
            if rank == 0 and config.sample_every and done % config.sample_every == 0:
                from .sample2d import save_grid, sample_images

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


def _append_log(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
