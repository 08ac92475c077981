"""What determines a training run: ``TrainConfig``, the training presets and ``make_config``."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..axes import PLANES
from ..diffusion.schedule import DEFAULT_SCHEDULE, ScheduleConfig
from ..diffusion.unet import UNET_PRESETS, UNetConfig
from ..errors import UserError
from .data import DataConfig


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


# Options that may change when a run is resumed; everything else comes from the run's config.json.
RESUMABLE = {"steps", "save_every", "keep", "log_every", "sample_every", "device", "threads", "progress", "resume",
             "out", "data"}
_CHANGES = ("steps", "save_every", "keep", "log_every", "sample_every", "threads")


def check_resumable(given: set[str]) -> None:
    """UserError unless every option the user gave (``given``) may change when a run is resumed."""
    if given - RESUMABLE:
        raise UserError(f"--resume continues with the run's stored settings; only --steps, --save-every, --keep, "
                        f"--log-every, --sample-every, --device and --threads may change (got "
                        f"{', '.join('--' + g.replace('_', '-') for g in sorted(given - RESUMABLE))})")


def run_config(stored: TrainConfig | None, data: tuple[str, ...], *,
               image_size: int = 64, axis: str = "0", threshold: float | str | None = None, phases: int = 2,
               augment: bool = True, voxel_size: tuple[float, float, float] | None = None, unit: str | None = None,
               preset: str = "small", **options) -> TrainConfig:
    """The config of ``m3d train``: a new run's from the options (``make_config``'s), or, with the ``stored``
    config of a run to resume, that one with only the RESUMABLE options changed (UserError for other DATA)."""
    changes = {k: options.pop(k, None) for k in _CHANGES}
    changes = {k: v for k, v in changes.items() if v is not None}
    if stored is not None:
        if data and tuple(data) != stored.data.paths:
            raise UserError(f"--resume uses the run's data {list(stored.data.paths)}; omit DATA or give the same paths")
        return dataclasses.replace(stored, **changes)
    if not data:
        raise UserError("no training data given (DATA: image files, 3D volumes or folders)")
    data_cfg = DataConfig(paths=data, image_size=image_size, axis=axis, threshold=threshold, phases=phases,
                          augment=augment, voxel_size=voxel_size, unit=unit)
    return make_config(data_cfg, preset, **options, **changes)
