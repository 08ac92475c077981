"""NumPy-level API (re-exported by ``micro3diff``): load a model, sample volumes, save and evaluate them.

>>> import micro3diff as m3d
>>> vols = m3d.sample("spheres", 64, n=2, preset="preview", seed=0)   # (2, 64, 64, 64) uint8 phases
>>> m3d.save("spheres_0.tif", vols[0], voxel_size=0.5, unit="um")      # Fiji / ParaView ready
>>> m3d.evaluate(vols, reference).metrics["two_point"].error_of_mean
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .diffusion.anchors import Anchor
    from .io.checkpoint import Checkpoint
    from .metrics.report import EvaluationReport

ModelLike = Union[str, os.PathLike, "Checkpoint"]


def list_models() -> list[str]:
    """Names of the shipped models (``micro3diff/models/<name>.safetensors``), for ``load_model`` and ``sample``."""
    from .io.checkpoint import shipped_models

    return shipped_models()


def model_card(name: str) -> dict:
    """Key facts of a shipped model from its card (``micro3diff/models/<name>.md``) and header.

    Returns {"name", "title", "image_size", "channels", "parameters" (card text), "setting" (the first volume row of
    the card's quality table), "errors": {metric: {"per_volume", "floor", "shuffled"}} (eq. 24 error rates, %, as
    text), "volume_fraction" (generated (reference))}; card fields absent are None (errors: empty).
    """
    import re

    from .io.checkpoint import MODELS_DIR, read_config, resolve

    data = read_config(resolve(name)).get("data", {})
    card = MODELS_DIR / f"{name}.md"
    text = card.read_text() if card.is_file() else ""
    title = re.search(r"^# `[^`]+`: (.+)$", text, re.M)
    params = re.search(r"([\d.]+ M) parameters", text)
    row = re.search(r"^\| (?:3d|2d) \|" + r"([^|]+)\|" * 10, text, re.M)  # volumes, not the 2D model alone
    errors, setting, fraction = {}, None, None
    if row:
        cells = [c.strip() for c in row.groups()]
        setting, fraction = cells[0], cells[3]
        for metric, (e, f, b) in (("S2", cells[4:7]), ("L", cells[7:10])):
            errors[metric] = {"per_volume": e.split(" ")[0], "floor": f, "shuffled": b}
    return {"name": name, "title": title and title[1], "image_size": data.get("image_size"),
            "channels": data.get("channels"), "parameters": params and params[1], "setting": setting,
            "errors": errors, "volume_fraction": fraction}


def load_model(name_or_path: str | os.PathLike, device: str = "cpu") -> Checkpoint:
    """A checkpoint file or shipped model (by name) as a ``Checkpoint`` (fp32 U-Net in eval mode on ``device``)."""
    from .io.checkpoint import load_checkpoint

    return load_checkpoint(name_or_path, device)


def resolve_volume_fraction(spec: str | Sequence[float] | None, ckpt: Checkpoint) -> list[float] | None:
    """Target phase fractions: "data" (the checkpoint's training fractions; UserError if unrecorded), "auto"
    ("data" when recorded, else None), None / "off" (no control) or the numbers themselves."""
    if spec is None or spec == "off" or (spec == "auto" and ckpt.phase_fractions is None):
        return None
    if spec in ("data", "auto"):
        if ckpt.phase_fractions is None:
            raise UserError(f"{ckpt.path} records no training phase fractions; give volume fractions or off")
        return ckpt.phase_fractions
    if isinstance(spec, str):
        raise UserError(f"volume fraction must be data, auto, off or numbers, got {spec!r}")
    return [float(v) for v in spec]


def plane_checkpoints(model: ModelLike | Mapping[str, ModelLike], device: Any = "cpu") -> dict[str, Checkpoint]:
    """{plane: Checkpoint} for one model or {"yz", "xz", "xy"} of them, each file loaded once onto ``device``.

    UserError unless every plane is given and all share one noise schedule.
    """
    from .io.checkpoint import Checkpoint
    from .axes import PLANES

    specs = dict(model) if isinstance(model, Mapping) else dict.fromkeys(PLANES, model)
    if sorted(specs) != sorted(PLANES):
        raise UserError(f"per-plane models need exactly the planes {', '.join(PLANES)}, got {', '.join(specs)}")
    loaded: dict[str, Checkpoint] = {}
    for spec in specs.values():
        if isinstance(spec, Checkpoint):
            spec.model.to(device)
        elif os.fspath(spec) not in loaded:
            loaded[os.fspath(spec)] = load_model(spec, device)
    ckpts = {p: s if isinstance(s, Checkpoint) else loaded[os.fspath(s)] for p, s in specs.items()}
    if any(c.schedule != ckpts["yz"].schedule for c in ckpts.values()):
        raise UserError("per-plane models were trained with different noise schedules")
    return ckpts


def sample(model: ModelLike | Mapping[str, ModelLike], shape: int | Sequence[int], n: int = 1, *,
           preset: str = "fast", seed: int = 0, volume_fraction: str | Sequence[float] | None = "auto",
           prior: str = "standard", device: str | None = None, fast: bool = True,
           anchors: Sequence[Anchor | tuple[str, int, Any]] | None = None, **kwargs: Any) -> np.ndarray:
    """``n`` volumes of ``shape`` (one side or (D, H, W)) as uint8 phase labels (n, D, H, W).

    ``model``: a name, path or ``Checkpoint``, or {"yz", "xz", "xy"} of them. ``volume_fraction``: as
    ``resolve_volume_fraction`` (default: steer to the training fractions when recorded, like ``m3d sample``).
    ``prior``: "standard" (N(0, I)) or "data" (q(x_T) from the training data). ``fast``: the fast path
    (``SamplerOptions.fast``). ``anchors``: measured slices every volume must contain exactly, as
    ``micro3diff.anchors.Anchor`` s or (axis, index, image array or file) triples, axis "x" | "y" | "z" (array
    axis D | H | W); images are phase-mapped like the model's training images. Other keyword arguments go to ``micro3diff.sampler.sample_volume``
    (steps, n_harmonize, method, eta, max_batch, periodic, ...). Volume i is the CLI's volume i of ``--seed seed``.
    """
    from .diffusion import sampler
    from .diffusion.anchors import Anchor, Anchors, anchors_from
    from .cli._common import pick_device
    from .diffusion.schedule import NoiseSchedule

    dev = pick_device(device)
    plane_ckpts = plane_checkpoints(model, dev)
    first = plane_ckpts["yz"]
    if prior not in ("standard", "data"):
        raise UserError(f"prior must be 'standard' or 'data', got {prior!r}")
    shape3 = (int(shape),) * 3 if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if anchors:
        given = [a if isinstance(a, Anchor) else anchors_from([a], first.data)[0] for a in anchors]
        kwargs["anchors"] = Anchors(given, shape3, first.unet.channels)
    res = sampler.sample_volume({p: c.model for p, c in plane_ckpts.items()}, NoiseSchedule(first.schedule),
                                shape3, n, preset=preset, seed=seed, device=dev,
                                options=sampler.SamplerOptions.fast(dev) if fast else None,
                                prior=first.prior if prior == "data" else None,
                                volume_fraction=resolve_volume_fraction(volume_fraction, first), **kwargs)
    return res.phases.cpu().numpy()


def save(path: str | os.PathLike, volume: np.ndarray, voxel_size: float | Sequence[float] | None = None,
         unit: str = "um", n_phases: int | None = None) -> dict[str, int]:
    """Write one phase volume (D, H, W) (or image (H, W)) to .tif / .npy / .vti by suffix; returns {stored value: phase}.

    TIFF: ImageJ z-stack with ``voxel_size`` (one number or (d, h, w), in ``unit``), two phases as 0/255;
    .vti: ``voxel_size`` is the spacing. ``n_phases``: default max label + 1.
    """
    from .io.arrays import write_phases

    volume = np.asarray(volume)
    if volume.ndim not in (2, 3) or not np.issubdtype(volume.dtype, np.integer) or volume.min() < 0:
        raise UserError(f"save needs non-negative integer phase labels (D, H, W) or (H, W), got {volume.dtype} "
                        f"{volume.shape}")
    return write_phases(path, volume, n_phases, voxel_size=voxel_size, unit=unit)


def evaluate(volumes: np.ndarray | Sequence[np.ndarray], reference: np.ndarray | str | os.PathLike,
             **kwargs: Any) -> EvaluationReport:
    """S2 and L(z) of ``volumes`` ((n, D, H, W) or a list of (D, H, W)) against ``reference`` (an array or a file).

    Keyword arguments as ``micro3diff.report.evaluate`` (mode, r_max, periodic, phase, threshold, n_crops, seed).
    """
    from .io.arrays import read_array
    from .metrics.report import evaluate as evaluate_report

    ref = read_array(reference) if isinstance(reference, (str, os.PathLike)) else np.asarray(reference)
    return evaluate_report(list(volumes), ref, **kwargs)
