"""Model checkpoints shared by training and sampling: safetensors weights + JSON config. Never unpickled.

A checkpoint is one ``.safetensors`` file whose header metadata holds ``{"micro3diff": <config JSON>}``:
``{"format", "unet": UNetConfig, "schedule": ScheduleConfig, "data": {...}, "training": {...}}``.
``data`` says how images were scaled (``{"image_size", "channels", "phases", "scaling", "x_mean", "x_var"}``:
x_mean/x_var are the per-channel moments of the scaled training images, the sampler's prior; ``x0_moments``, if
measured, the model's x0-hat moments on them per timestep, see ``diffusion.x0_moments``), ``training``
where the weights came from. ``save_checkpoint`` also writes the same config as ``<file>.json`` beside it
for people and tools. Shipped models live in ``micro3diff/models/<name>.safetensors`` and are loaded by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..diffusion.schedule import ScheduleConfig
from ..diffusion.unet import UNet, UNetConfig
from ..diffusion.x0_moments import X0Moments
from ..errors import UserError
from .files import atomic_path, write_json

FORMAT = "micro3diff-checkpoint/1"
MODELS_DIR = Path(__file__).parents[1] / "models"


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

    @property
    def x0_moments(self) -> X0Moments | None:
        """The model's x0-hat moments on its training images per timestep (``data["x0_moments"]``), if measured
        (``m3d train`` does at the end, ``m3d calibrate`` for older checkpoints)."""
        d = self.data.get("x0_moments")
        return None if d is None else X0Moments.from_dict(d)

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


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], key: str, meta: dict) -> None:
    """Write ``tensors`` with ``meta`` as JSON under header key ``key``, and ``meta`` as ``<path>.json``, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={key: json.dumps(meta)})
    write_json(path.with_suffix(path.suffix + ".json"), meta)


def read_safetensors(path: str | os.PathLike, key: str, what: str, *,
                     tensors: bool = False) -> tuple[dict, dict[str, torch.Tensor] | None]:
    """(the JSON under header key ``key``, the tensors if ``tensors`` else None); UserError naming ``what``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[key])
        return meta, load_file(str(path)) if tensors else None
    except Exception as exc:  # corrupt/truncated/foreign files raise many types
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc})") from None


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], unet: UNetConfig,
                    schedule: ScheduleConfig, data: dict, training: dict, dtype: torch.dtype = torch.float32) -> None:
    """Write weights (cast to ``dtype``) + config atomically to ``path`` (.safetensors) and ``path + .json``."""
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    write_safetensors(path, tensors, "micro3diff", config_dict(unet, schedule, data, training))


def read_config(path: Path) -> dict:
    """The config stored in a checkpoint's header. UserError if the file is not a micro3diff checkpoint."""
    cfg = read_safetensors(path, "micro3diff", "micro3diff checkpoint")[0]
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: the checkpoint header must be a JSON object, got {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        raise UserError(f"{path}: unsupported checkpoint format {cfg.get('format')!r} (expected {FORMAT})")
    check_config(cfg, path)
    return cfg


# Header schema: section -> {field: (type, lo, hi)}; lists give the type of their items (lo, hi: their length).
_INT, _NUM = (int,), (int, float)
_SCHEMA: dict[str, dict[str, tuple]] = {
    "unet": {"channels": (_INT, 1, 64), "dim": (_INT, 1, 4096), "dim_mults": ([_INT, 1, 64], 1, 8),
             "attention": ([(bool,), None, None], 1, 8), "num_resnet_blocks": (_INT, 1, 16), "heads": (_INT, 1, 256),
             "head_dim": (_INT, 1, 4096), "groups": (_INT, 1, 4096)},
    "schedule": {"kind": ((str,), None, None), "T": (_INT, 2, 100000), "beta_start": (_NUM, 0, 1),
                 "beta_end": (_NUM, 0, 1), "prediction": ((str,), None, None)},
    "data": {"image_size": (_INT, 1, 65536), "channels": (_INT, 1, 64), "phases": (_INT, 2, 64),
             "x_mean": ([_NUM, -1, 1], 1, 64), "x_var": ([_NUM, 0, 1], 1, 64)},
}


def _check_value(where: str, value, kind, lo, hi) -> None:
    if isinstance(kind, list):
        if not isinstance(value, list) or not lo <= len(value) <= hi:
            raise UserError(f"{where} must be a list of {lo} to {hi} entries, got {json.dumps(value)[:60]}")
        for i, item in enumerate(value):
            _check_value(f"{where}[{i}]", item, *kind)
        return
    if bool in kind:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and kind is _NUM:
        ok = math.isfinite(value)
    if ok and lo is not None:
        ok = lo <= value <= hi
    if not ok:
        want = {_INT: "an integer", _NUM: "a finite number", (bool,): "true or false"}.get(kind, "a string")
        bounds = f" in [{lo}, {hi}]" if lo is not None and kind != (bool,) else ""
        raise UserError(f"{where} must be {want}{bounds}, got {json.dumps(value)[:60]}")


def check_config(cfg: dict, path: Path) -> None:
    """UserError unless the header's sections and fields have the right types, ranges and finiteness."""
    for section in ("unet", "schedule", "data", "training"):
        if not isinstance(cfg.get(section, {}), dict):
            raise UserError(f"{path}: header field {section!r} must be a JSON object, got "
                            f"{json.dumps(cfg[section])[:60]}")
    for section in ("unet", "schedule"):
        if section not in cfg:
            raise UserError(f"{path}: the header has no {section!r} config")
    for section, fields in _SCHEMA.items():
        for name, rule in fields.items():
            if name in cfg.get(section, {}):
                _check_value(f"{path}: {section}.{name}", cfg[section][name], *rule)
    unet, data = cfg["unet"], cfg.get("data", {})
    for moment in ("x_mean", "x_var"):
        if moment in data and len(data[moment]) != unet.get("channels", 1):
            raise UserError(f"{path}: data.{moment} has {len(data[moment])} entries for "
                            f"{unet.get('channels', 1)} channels")
    if "x0_moments" in data:
        _check_x0_moments(data["x0_moments"], unet.get("channels", 1), path)


def _check_x0_moments(d, channels: int, path: Path) -> None:
    """UserError unless ``d`` is an ``X0Moments`` dict: increasing timesteps, finite (len(t), channels) moments."""
    try:
        m = X0Moments.from_dict(d)
        rows = [*m.mean, *m.var]
        ok = (len(m.t) >= 1 and len(m.mean) == len(m.var) == len(m.t) and list(m.t) == sorted(set(m.t))
              and all(len(r) == channels and all(math.isfinite(v) for v in r) for r in rows)
              and min(min(r) for r in m.var) >= 0)
    except (TypeError, KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise UserError(f"{path}: data.x0_moments must hold increasing timesteps 't' and finite per-channel "
                        f"'mean' and non-negative 'var' rows ({channels} values each), one per timestep")


def load_checkpoint(name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint file or shipped model (by name) as an fp32 UNet in eval mode on ``device``."""
    from safetensors.torch import load_file

    path = resolve(name_or_path)
    cfg = read_config(path)
    try:
        unet = UNetConfig.from_dict(cfg["unet"])
        schedule = ScheduleConfig(**cfg["schedule"])
    except TypeError as exc:
        raise UserError(f"{path}: bad config in the header ({exc})") from None
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # corrupt/truncated files raise many types
        raise UserError(f"{path}: unreadable weights ({type(exc).__name__}: {exc})") from None
    _check_weights(path, unet, tensors)
    model = UNet(unet)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Checkpoint(model.to(device).eval(), unet, schedule, cfg.get("data", {}), cfg.get("training", {}), path, digest)


def _check_weights(path: Path, unet: UNetConfig, tensors: dict[str, torch.Tensor]) -> None:
    """UserError naming the first tensor that is missing, extra, misshapen or non-finite (before building the model)."""
    with torch.device("meta"):
        expected = UNet(unet).state_dict()
    for name in sorted(expected.keys() | tensors.keys()):
        if name not in tensors:
            raise UserError(f"{path}: weights do not match the stored config: tensor {name!r} is missing")
        if name not in expected:
            raise UserError(f"{path}: weights do not match the stored config: unexpected tensor {name!r}")
        if tensors[name].shape != expected[name].shape:
            raise UserError(f"{path}: weights do not match the stored config: {name!r} has shape "
                            f"{tuple(tensors[name].shape)}, the config needs {tuple(expected[name].shape)}")
        if tensors[name].is_floating_point() and not torch.isfinite(tensors[name]).all():
            raise UserError(f"{path}: tensor {name!r} holds NaN or infinite weights")
