"""NumPy-level API (re-exported by ``micro3diff``): load a model, sample volumes, save and evaluate them.

>>> import micro3diff as m3d
>>> vols = m3d.sample("spheres", 64, n=2, preset="preview", seed=0)   # (2, 64, 64, 64) uint8 phases
>>> m3d.save("spheres_0.tif", vols[0], voxel_size=0.5, unit="um")      # Fiji / ParaView ready
>>> m3d.evaluate(vols, reference).metrics["two_point"].error_of_mean
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .anchors import Anchor
    from .io.checkpoint import Checkpoint
    from .metrics.report import EvaluationReport
    from .sampling import ModelLike



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


def sample(model: ModelLike | Mapping[str, ModelLike], shape: int | Sequence[int], n: int = 1, *,
           preset: str = "auto", seed: int = 0, volume_fraction: str | Sequence[float] | None = "auto",
           prior: str = "standard", device: str | None = None, fast: bool = True,
           anchors: Sequence[Anchor | tuple[str, int, Any]] | None = None, **kwargs: Any) -> np.ndarray:
    """``n`` volumes of ``shape`` (one side or (D, H, W)) as uint8 phase labels (n, D, H, W).

    ``model``: a name, path or ``Checkpoint``, or {"yz", "xz", "xy"} of them. ``preset``: a preset name, or
    "auto" (the setting measured for a shipped model's weights, else "fast"). ``volume_fraction``: as
    ``sampling.resolve_volume_fraction`` (default: steer to the training fractions when recorded, like
    ``m3d sample``), or "anchors" (the anchored voxels' fractions; for serial sections). ``prior``:
    "standard" (N(0, I)) or "data" (q(x_T) from the training data). ``fast``: the
    fast path (``SamplerOptions.fast``). ``anchors``: measured slices every volume must contain exactly, as
    ``micro3diff.anchors.Anchor`` s or (axis, index, image array or file) triples, axis "x" | "y" | "z"
    (array axis D | H | W); images are phase-mapped like the model's training images. Other keyword arguments
    are ``SamplerSettings`` fields (steps, n_harmonize, method, eta, max_batch, periodic, ...). Volume i is the
    CLI's volume i of ``--seed seed``.
    """
    from .devices import pick_device
    from .anchors import Anchor, anchors_from
    from .diffusion.sampler import sample_volume
    from .diffusion.schedule import NoiseSchedule
    from .sampling import plane_checkpoints, run_settings

    dev = pick_device(device)
    ckpts = plane_checkpoints(model, dev)
    first = ckpts["yz"]
    shape3 = (int(shape),) * 3 if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    given = [a if isinstance(a, Anchor) else anchors_from([a], first.data)[0] for a in anchors or ()]
    settings = run_settings(ckpts, shape3, dev, preset=preset, prior=prior, fast=fast, volume_fraction=volume_fraction,
                            anchors=given, seed=seed, **kwargs)
    res = sample_volume({p: c.model for p, c in ckpts.items()}, NoiseSchedule(first.schedule), shape3, n, settings)
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

    Keyword arguments as ``micro3diff.metrics.report.evaluate`` (mode, r_max, periodic, phase, threshold, n_crops, seed).
    """
    from .io.arrays import read_array
    from .metrics.report import evaluate as evaluate_report

    ref = read_array(reference) if isinstance(reference, (str, os.PathLike)) else np.asarray(reference)
    return evaluate_report(list(volumes), ref, **kwargs)
