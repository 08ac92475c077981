"""Training images for the 2D DDPM: sources, phase scaling, random crops, dihedral augmentation, sharding.

Every source becomes a stack of 2D phase-label images (uint8, values 0..K-1):
- a 2D file (.png/.tif/.npy): one image;
- a 3D file (TIFF stack or .npy): its slices along ``axis`` ("0", "1", "2" or "all" three). An (N, H, W)
  stack of unrelated 2D images is the same thing read with axis "0" (the default);
- a folder: every .png/.tif/.tiff/.npy file in it, each read as above.
Images larger than the crop size S are cropped at random; smaller ones are refused.

Scaling (DESIGN 1.2): two phases -> one channel ``x = 2*I - 1``; K >= 3 phases -> K one-hot channels
``x = 2*onehot(I) - 1``. Binary input ({0,1}, {0,255}, bool) is used as is; anything else needs a
threshold (a number or "otsu": ``I = value > threshold``), and integer label images with 3+ values need
``phases=K``: they are never binarised silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..axes import plane_slices
from ..errors import UserError
from ..io.arrays import ARRAY_SUFFIXES, read_array, read_voxel_size, voxel_size3
from ..phases import binary_labels, multiphase_labels, parse_threshold

AXIS_CHOICES = ("0", "1", "2", "all")  # --axis: slice 3D sources along one array axis or all three


@dataclass(frozen=True)
class DataConfig:
    """Where training images come from and how they become tensors.

    ``threshold``: None (input must be binary), a number, or "otsu". ``phases``: 2 (one channel) or K >= 3
    (one-hot). ``augment``: 8-fold dihedral augmentation (4 rotations x flip). ``voxel_size`` (d, h, w) and
    ``unit``: the physical voxel size to record, overriding the one the sources' TIFF tags record.
    """

    paths: tuple[str, ...]
    image_size: int = 64
    axis: str = "0"
    threshold: float | str | None = None
    phases: int = 2
    augment: bool = True
    voxel_size: tuple[float, float, float] | None = None
    unit: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "voxel_size", voxel_size3(self.voxel_size))
        object.__setattr__(self, "axis", str(self.axis))
        object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        if not self.paths:
            raise UserError("no training data given")
        if self.axis not in AXIS_CHOICES:
            raise UserError(f"axis must be one of {', '.join(AXIS_CHOICES)}, got {self.axis!r}")
        if self.image_size < 1:
            raise UserError(f"image size must be positive, got {self.image_size}")
        if self.phases < 2:
            raise UserError(f"phases must be >= 2, got {self.phases}")
        if self.phases > 2 and self.threshold is not None:
            raise UserError("--threshold binarises images; it cannot be combined with --phases K >= 3")

    @property
    def channels(self) -> int:
        """Model channels: 1 for two phases, K for K-phase one-hot."""
        return 1 if self.phases == 2 else self.phases


def _source_files(path: Path) -> list[Path]:
    """The image files a path stands for: itself, or the supported files in a folder (sorted)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in ARRAY_SUFFIXES)
    if not files:
        raise UserError(f"folder {path} holds no images ({', '.join(ARRAY_SUFFIXES)})")
    return files


class Crop(NamedTuple):
    """One training example: image ``item``, top-left corner (y, x), dihedral transform k in 0..7."""

    item: int
    y: int
    x: int
    k: int


def dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of the square (k in 0..7): rotate by 90*(k % 4) degrees, then flip if k >= 4.

    img: (..., H, W) -> (..., W or H, H or W).
    """
    out = np.rot90(img, k % 4, axes=(-2, -1))
    return out[..., ::-1] if k >= 4 else out


class TrainingImages:
    """A pool of 2D label images (stacks of slices) turned into crops (C, S, S) in [-1, 1].

    ``stacks[i]``: (N_i, H_i, W_i) uint8 phase labels (possibly a view of a volume along an axis).
    """

    def __init__(self, stacks: list[np.ndarray], names: list[str], config: DataConfig, info: dict | None = None):
        S = config.image_size
        for stack, name in zip(stacks, names):
            if stack.shape[1] < S or stack.shape[2] < S:
                raise UserError(f"{name}: images of {stack.shape[1]}x{stack.shape[2]} are smaller than the crop "
                                f"size {S} (--image-size)")
        self.stacks, self.names, self.config = stacks, names, config
        self.info = info or {}
        self._offsets = np.cumsum([0] + [s.shape[0] for s in stacks])

    @property
    def channels(self) -> int:
        return self.config.channels

    def __len__(self) -> int:
        """Number of 2D images (slices) in the pool."""
        return int(self._offsets[-1])

    def image(self, item: int) -> np.ndarray:
        """Label image ``item``: (H, W) uint8."""
        s = int(np.searchsorted(self._offsets, item, side="right")) - 1
        return self.stacks[s][item - self._offsets[s]]

    def labels(self, crop: Crop) -> np.ndarray:
        """Labels of one crop: (S, S) uint8."""
        S = self.config.image_size
        return dihedral(self.image(crop.item)[crop.y:crop.y + S, crop.x:crop.x + S], crop.k)

    def __getitem__(self, crop: Crop) -> torch.Tensor:
        """One crop as (C, S, S) float32 in [-1, 1]."""
        return self.batch([crop])[0]

    def batch(self, crops: list[Crop]) -> torch.Tensor:
        """Crops as (B, C, S, S) float32: 2*I - 1 (two phases) or 2*onehot(I) - 1 (K phases)."""
        labels = torch.from_numpy(np.stack([self.labels(c) for c in crops]))
        if self.config.phases == 2:
            return labels.unsqueeze(1).float().mul_(2).sub_(1)
        onehot = torch.nn.functional.one_hot(labels.long(), self.config.phases)
        return onehot.permute(0, 3, 1, 2).float().mul_(2).sub_(1)

    def moments(self) -> dict:
        """Per-channel mean and variance of the scaled images x = 2*I - 1 (or 2*onehot - 1) over the pool.

        Values are +-1, so var = 1 - mean^2; the sampler starts from q(x_T) built on these (``x_mean``, ``x_var``).
        """
        counts = sum(np.bincount(s.ravel(), minlength=self.config.phases)[:self.config.phases] for s in self.stacks)
        fractions = counts / counts.sum()
        mean = 2 * fractions - 1 if self.channels > 1 else 2 * fractions[1:2] - 1
        return {"x_mean": [float(m) for m in mean], "x_var": [float(1 - m * m) for m in mean]}

    def checkpoint_data(self, plane: str | None = None) -> dict:
        """The ``data`` dict stored in model checkpoints (see ``micro3diff.io.checkpoint``)."""
        cfg = self.config
        data = {"image_size": cfg.image_size, "channels": cfg.channels, "phases": cfg.phases,
                "scaling": "x = 2*I - 1" if cfg.phases == 2 else "x = 2*onehot(I) - 1",
                "source": [f"{p} (axis {cfg.axis})" for p in cfg.paths], "threshold": cfg.threshold,
                "augment": "dihedral8" if cfg.augment else "none", **self.moments(), **self.info}
        if plane is not None:
            data["plane"] = plane
        return data


def load_training_images(config: DataConfig) -> TrainingImages:
    """Read, scale-check and slice every source of ``config``. UserError for anything a user must fix."""
    files = [f for p in config.paths for f in _source_files(Path(p))]
    arrays, names = [], []
    for f in files:
        arr = read_array(f)
        if arr.ndim not in (2, 3):
            raise UserError(f"{f}: expected a 2D image or a 3D volume/stack, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
            raise UserError(f"{f}: unsupported data type {arr.dtype} (use real-valued images)")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise UserError(f"{f} contains NaN or infinite values")
        arrays.append(arr)
        names.append(str(f))
    info: dict = {}
    sizes = {(config.voxel_size, "um")} if config.voxel_size else {read_voxel_size(f) for f in files} - {None}
    if len(sizes) == 1:  # the user's voxel size, else the sources' one (TIFF tags); sampled volumes inherit it
        info["voxel_size"], unit = sizes.pop()
        info["unit"] = config.unit or unit
    if config.phases == 2:
        labels, used = zip(*(binary_labels(a, n, config.threshold) for a, n in zip(arrays, names)))
        labels = list(labels)
        if config.threshold == "otsu":
            info["otsu_thresholds"] = list(used)
    else:
        labels, info["phase_values"] = multiphase_labels(arrays, names, config.phases)
    if all(lab.min() == lab.max() == labels[0].min() for lab in labels):
        raise UserError(f"every training image is phase {labels[0].min()} only: there is nothing to learn")
    axes = (0, 1, 2) if config.axis == "all" else (int(config.axis),)
    stacks, stack_names = [], []
    for lab, name in zip(labels, names):
        if lab.ndim == 2:
            stacks.append(lab[None])
            stack_names.append(name)
            continue
        for a in axes:
            stacks.append(plane_slices(lab, a))
            stack_names.append(f"{name} (slices along axis {a})")
    return TrainingImages(stacks, stack_names, config, info)


class CropSampler:
    """Deterministic crops for each (step, rank), a pure function of (seed, rank, step): resumable without state.

    Items are sharded across ranks (rank r takes items r, r + world, ...; with fewer items than ranks every
    rank uses all of them). Each rank visits its shard in a fresh permutation per epoch; corners and
    dihedral transforms are drawn per step.
    """

    def __init__(self, images: TrainingImages, batch: int, seed: int, rank: int = 0, world: int = 1):
        n = len(images)
        self.shard = np.arange(rank, n, world) if n >= world else np.arange(n)
        self.images, self.batch, self.seed, self.rank = images, batch, seed, rank
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, self.rank, epoch, 0]).permutation(self.shard)
        return self._perms[epoch]

    def crops(self, step: int) -> list[Crop]:
        """The ``batch`` crops of ``step``."""
        n, S = len(self.shard), self.images.config.image_size
        rng = np.random.default_rng([self.seed, self.rank, step, 1])
        out = []
        for g in range(step * self.batch, (step + 1) * self.batch):
            item = int(self._perm(g // n)[g % n])
            H, W = self.images.image(item).shape
            y, x = (int(v) for v in rng.integers(0, (H - S + 1, W - S + 1)))
            k = int(rng.integers(0, 8)) if self.images.config.augment else 0
            out.append(Crop(item, y, x, k))
        return out

