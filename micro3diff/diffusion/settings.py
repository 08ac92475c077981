"""Sampler settings: the presets (steps, n_h, method, eta), ``auto`` (the setting measured for a shipped model's
weights) and ``SamplerSettings``, everything a multi-plane sampling run takes besides the models, the schedule,
the shape and the number of volumes."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ..errors import UserError
from .network import SamplerOptions

if TYPE_CHECKING:
    from ..anchors import Anchors
    from .x0_moments import X0Moments


@dataclass(frozen=True)
class SamplerPreset:
    """Settings: ``steps`` respaced steps, ``n_harmonize`` denoiser calls per step, ``method`` ddpm|ddim, ``eta``."""

    steps: int
    n_harmonize: int
    method: str = "ddpm"
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_harmonize < 1:
            raise UserError(f"steps and n_harmonize must be >= 1, got {self.steps} and {self.n_harmonize}")
        if self.method not in ("ddpm", "ddim"):
            raise UserError(f"sampling method must be ddpm or ddim, got {self.method!r}")
        if self.eta < 0:
            raise UserError(f"eta must be >= 0, got {self.eta}")

    @property
    def nfe(self) -> int:
        """Denoiser calls per volume: n_h per step, one at the last step."""
        return (self.steps - 1) * self.n_harmonize + 1


PRESETS: dict[str, SamplerPreset] = {
    "paper": SamplerPreset(steps=1000, n_harmonize=10),  # paper 3.4 / Fig. 7: T = 1000, n_h = 10 (9991 calls)
    "quality": SamplerPreset(steps=250, n_harmonize=5),  # 1246 calls
    "fast": SamplerPreset(steps=100, n_harmonize=3),  # 298 calls
    "preview": SamplerPreset(steps=25, n_harmonize=2),  # 49 calls: CPU-friendly look at a model
}


AUTO = "auto"  # the preset name that means "the setting measured for these weights" (recommended_preset)
RECOMMENDED = Path(__file__).parents[1] / "models" / "samplers.json"


def recommended_preset(sha256s: Sequence[str]) -> SamplerPreset:
    """``auto``: the setting ``micro3diff/models/samplers.json`` records for these weights (the sha256 of every
    plane's checkpoint; one checkpoint for all planes), measured in benchmarks/results/quality.md; else ``fast``."""
    entries = json.loads(RECOMMENDED.read_text())["models"].values()
    found = [e for e in entries if set(sha256s) == {e["sha256"]}]
    if not found:
        return PRESETS["fast"]
    spec = {k: v for k, v in found[0]["setting"].items() if k != "preset"}
    return sampler_settings(found[0]["setting"]["preset"], **spec)


def sampler_settings(preset: str | SamplerPreset = "fast", *, steps: int | None = None,
                     n_harmonize: int | None = None, method: str | None = None,
                     eta: float | None = None, sha256s: Sequence[str] = ()) -> SamplerPreset:
    """A preset (by name; ``auto``: ``recommended_preset(sha256s)``) with the given fields overridden (None keeps
    the preset's)."""
    if preset == AUTO:
        preset = recommended_preset(sha256s)
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r} (use {AUTO} or one of {', '.join(PRESETS)})")
        preset = PRESETS[preset]
    given = dict(steps=steps, n_harmonize=n_harmonize, method=method, eta=eta)
    return dataclasses.replace(preset, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class SamplerSettings:
    """One sampling run's settings (``micro3diff.diffusion.sampler.iter_sample_volume``).

    ``preset``: steps, n_h, method, eta. Volume v of a run has seed ``seed + v``. ``device``: default the
    models'. ``max_batch``: slices per forward (None: all). ``rotate=False`` keeps the yz plane (a control);
    ``rotate_between_harmonize`` also rotates between the n_h calls of a step. ``periodic``: circular padding
    in the models' convolutions for the run. ``options``: how the network runs (None: the reference, fp32
    eager, synced timing; ``SamplerOptions.fast(device)``: the fast path). ``prior``: (mean, var) per channel
    of the training data's x_0 (``Checkpoint.prior``): start from the Gaussian approximation of q(x_T)
    (``NoiseSchedule.prior``) instead of N(0, I). ``volume_fraction``: target phase fractions (one channel:
    [phi]; K channels: K values): every call's output is steered so that x0-hat has them
    (``volume_fraction.steer``); with ``x0_moments`` ({"yz", "xz", "xy"} -> that plane's model's ``X0Moments``,
    ``Checkpoint.x0_moments``) x0-hat also keeps the variance the model gives on real images. ``anchors``:
    measured slices (``Anchors`` of the volume's shape): before every
    call their voxels are set to the anchor diffused to the call's noise level, and x_0 holds them exactly.
    """

    preset: SamplerPreset = PRESETS["fast"]
    seed: int = 0
    device: torch.device | str | None = None
    max_batch: int | None = None
    rotate: bool = True
    rotate_between_harmonize: bool = False
    periodic: bool = False
    options: SamplerOptions | None = None
    prior: tuple[Sequence[float], Sequence[float]] | None = None
    volume_fraction: Sequence[float] | None = None
    x0_moments: Mapping[str, X0Moments] | None = None
    anchors: Anchors | None = None

    @classmethod
    def make(cls, preset: str | SamplerPreset = "fast", *, steps: int | None = None, n_harmonize: int | None = None,
             method: str | None = None, eta: float | None = None, sha256s: Sequence[str] = (),
             **fields) -> "SamplerSettings":
        """Settings from a preset (by name; ``auto`` for the weights ``sha256s``) with its fields overridden (None
        keeps the preset's) and ``fields``."""
        return cls(sampler_settings(preset, steps=steps, n_harmonize=n_harmonize, method=method, eta=eta,
                                    sha256s=sha256s), **fields)
