"""x0-hat moments of a trained model on its training images (``diffusion.x0_moments``): measured by ``m3d train``
at its last step, and by ``m3d calibrate`` for a checkpoint made without them."""
from __future__ import annotations

import os
from pathlib import Path

from ..diffusion.schedule import NoiseSchedule
from ..diffusion.x0_moments import measure
from ..errors import UserError
from ..io.checkpoint import config_dict, load_checkpoint, read_safetensors, write_safetensors
from .data import CropSampler, DataConfig, TrainingImages, load_training_images

CROPS = 64  # training crops measured (one noise draw each per timestep)


def x0_moments(model, schedule: NoiseSchedule, images: TrainingImages, seed: int = 0) -> dict:
    """``X0Moments`` of ``model`` on ``CROPS`` training crops of ``images`` (drawn as training draws them, with
    ``seed``), as the dict stored in checkpoints under ``data["x0_moments"]``."""
    x0 = images.batch(CropSampler(images, CROPS, seed).crops(0))
    return measure(model, schedule, x0, seed=seed).to_dict()


def calibrate(checkpoint: str | os.PathLike, data: tuple[str, ...], *, out: str | os.PathLike | None = None,
              axis: str = "0", threshold: float | str | None = None, seed: int = 0) -> Path:
    """Measure a checkpoint's x0-hat moments on the images in ``data`` (read as ``m3d train`` reads them, at the
    checkpoint's crop size and phase count) and write the checkpoint with them to ``out`` (default: in place,
    atomically)."""
    ck = load_checkpoint(checkpoint)
    size, phases = int(ck.data.get("image_size", 64)), int(ck.data.get("phases", 1 + (ck.unet.channels == 1)))
    images = load_training_images(DataConfig(tuple(data), image_size=size, axis=axis, threshold=threshold,
                                             phases=phases))
    if images.channels != ck.unet.channels:
        raise UserError(f"the images give {images.channels} channel(s), the model has {ck.unet.channels}")
    moments = x0_moments(ck.model, NoiseSchedule(ck.schedule), images, seed)
    tensors = read_safetensors(ck.path, "micro3diff", "micro3diff checkpoint", tensors=True)[1]
    path = Path(out) if out is not None else ck.path
    meta = config_dict(ck.unet, ck.schedule, {**ck.data, "x0_moments": moments}, ck.training)
    write_safetensors(path, tensors, "micro3diff", meta)  # the stored weights as they are (dtype kept)
    return path
