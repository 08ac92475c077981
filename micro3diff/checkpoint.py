"""Model checkpoints shared by training and sampling: safetensors weights + JSON config. Never unpickled.

A checkpoint is one ``.safetensors`` file whose header metadata holds ``{"micro3diff": <config JSON>}``:
``{"format", "unet": UNetConfig, "schedule": ScheduleConfig, "data": {...}, "training": {...}}``.
``data`` says how images were scaled (``{"image_size", "channels", "phases", "scaling", "x_mean", "x_var"}``:
x_mean/x_var are the per-channel moments of the scaled training images, the sampler's prior), ``training``
where the weights came from. ``save_checkpoint`` also writes the same config as ``<file>.json`` beside it
for people and tools. Shipped models live in ``micro3diff/models/<name>.safetensors`` and are loaded by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .io import atomic_path, write_json
from .schedule import ScheduleConfig
from .unet import UNet, UNetConfig

FORMAT = "micro3diff-checkpoint/1"
MODELS_DIR = Path(__file__).parent / "models"


@dataclass
class Checkpoint:
    """A loaded model with everything needed to sample from it."""

    model: UNet
    unet: UNetConfig
    schedule: ScheduleConfig
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""

    @property
    def prior(self) -> tuple[list[float], list[float]] | None:
        """Per-channel (mean, var) of the training data's x_0 (``data["x_mean"]``, ``data["x_var"]``), if recorded."""
        if "x_mean" not in self.data:
            return None
        return list(self.data["x_mean"]), list(self.data["x_var"])

    @property
    def phase_fractions(self) -> list[float] | None:
        """The training data's phase fractions as ``volume_fraction.steer`` takes them (x = 2 I - 1 per channel:
        one channel -> [phi_1]; K one-hot channels -> K fractions), if recorded."""
        if "x_mean" not in self.data:
            return None
        return [(float(m) + 1) / 2 for m in self.data["x_mean"]]

    def describe(self) -> dict:
        """JSON-able summary for sidecars: path, hash and the full config."""
        return {"path": str(self.path), "sha256": self.sha256, **config_dict(self.unet, self.schedule, self.data, self.training)}


def config_dict(unet: UNetConfig, schedule: ScheduleConfig, data: dict, training: dict) -> dict:
    return {"format": FORMAT, "unet": dataclasses.asdict(unet), "schedule": dataclasses.asdict(schedule),
            "data": data, "training": training}


def shipped_models() -> list[str]:
    """Names of the models shipped with the package."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.safetensors"))


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path, or the path of a shipped model by name. UserError if neither exists."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and (MODELS_DIR / f"{p.name}.safetensors").is_file():
        return MODELS_DIR / f"{p.name}.safetensors"
    if p.suffix or os.sep in str(name_or_path):
        raise UserError(f"no such checkpoint: {p}")
    names = ", ".join(shipped_models()) or "none installed"
    raise UserError(f"unknown model {str(name_or_path)!r}: not a file and not a shipped model ({names})")


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], unet: UNetConfig,
                    schedule: ScheduleConfig, data: dict, training: dict, dtype: torch.dtype = torch.float32) -> None:
    """Write weights (cast to ``dtype``) + config atomically to ``path`` (.safetensors) and ``path + .json``."""
    from safetensors.torch import save_file

    path = Path(path)
    cfg = config_dict(unet, schedule, data, training)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"micro3diff": json.dumps(cfg)})
    write_json(path.with_suffix(path.suffix + ".json"), cfg)


def read_config(path: Path) -> dict:
    """The config stored in a checkpoint's header. UserError if the file is not a micro3diff checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = json.loads(meta["micro3diff"])
    except Exception as exc:  # corrupt/truncated/foreign files raise many types
        raise UserError(f"{path} is not a readable micro3diff checkpoint ({type(exc).__name__}: {exc})") from None
    if cfg.get("format") != FORMAT:
        raise UserError(f"{path}: unsupported checkpoint format {cfg.get('format')!r} (expected {FORMAT})")
    return cfg


def load_checkpoint(name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint file or shipped model (by name) as an fp32 UNet in eval mode on ``device``."""
    from safetensors.torch import load_file

    path = resolve(name_or_path)
    cfg = read_config(path)
    try:
        unet = UNetConfig.from_dict(cfg["unet"])
        schedule = ScheduleConfig(**cfg["schedule"])
        model = UNet(unet)
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: weights do not match the stored config ({type(exc).__name__}: {exc})") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Checkpoint(model.to(device).eval(), unet, schedule, cfg.get("data", {}), cfg.get("training", {}), path, digest)
