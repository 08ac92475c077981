"""Anchored reconstruction: volumes that contain measured slices exactly (RePaint-style conditioning).

An anchor is a measured 2D phase image placed at ``index`` along one volume axis: ``x`` (array axis D:
image (H, W), the slice a yz-plane model sees), ``y`` (H: image (D, W)) or ``z`` (W: image (D, H)); the
letters are ``micro3diff.axes``'s (D = x, H = y, W = z). Before every denoiser call the
sampler overwrites the anchored voxels of x_t with the forward-diffused anchor sqrt(ab) a + sqrt(1 - ab) z
(RePaint, Lugmayr et al. 2022); the harmonization passes give the free voxels time to agree with them, and
the final x_0 holds the anchors exactly. For serial sections (two or more anchors along one axis) the sampler
skips the plane of the sections, whose calls see each free slice alone. Anchor images are turned into phases
by the training images' rules (``phases.binary_labels`` with the checkpoint's threshold, or its K phase values).
``point_estimate``: a voxel-by-voxel best guess from several anchored realizations.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

from .axes import AXES, PLANES
from .errors import UserError

ImageLike = Union[np.ndarray, str, os.PathLike]


@dataclass(frozen=True)
class Anchor:
    """Phase labels ``labels`` (uint8, the slice's two remaining axes in array order) at ``index`` along ``axis``."""

    axis: str
    index: int
    labels: np.ndarray


def parse_anchor(spec: str) -> tuple[str, int, str]:
    """``AXIS=INDEX:FILE`` (``--anchor``) -> (axis, index, file)."""
    axis, sep, rest = spec.partition("=")
    index, sep2, path = rest.partition(":")
    if not (sep and sep2 and path) or axis not in AXES or not index.lstrip("-").isdigit():
        raise UserError(f"bad --anchor {spec!r}: use AXIS=INDEX:FILE with AXIS in {', '.join(AXES)}, e.g. x=0:face.tif")
    return axis, int(index), path


def parse_stack(spec: str) -> tuple[str, str]:
    """``AXIS:FILE`` (``--anchors``) -> (axis, file)."""
    axis, sep, path = spec.partition(":")
    if not sep or not path or axis not in AXES:
        raise UserError(f"bad --anchors {spec!r}: use AXIS:FILE with AXIS in {', '.join(AXES)}, e.g. x:sections.tif")
    return axis, path


def to_labels(image: ImageLike, data: dict, name: str | None = None) -> np.ndarray:
    """An image (array or file) -> uint8 phase labels, by the rules the model's training images followed.

    ``data``: the checkpoint's ``data`` (``threshold``; ``phases`` and ``phase_values`` for K phases).
    """
    from .phases import binary_labels, parse_threshold
    from .io.arrays import read_array

    if isinstance(image, (str, os.PathLike)):
        name, image = name or os.fspath(image), read_array(image)
    name = name or "anchor image"
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise UserError(f"{name}: unsupported data type {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise UserError(f"{name} contains NaN or infinite values")
    phases = int(data.get("phases", 2))
    if phases == 2:
        threshold = parse_threshold(data.get("threshold"))
        try:
            return binary_labels(arr, name, threshold)[0]
        except UserError:  # only without a threshold: the training-data hints do not apply to an anchor
            raise UserError(f"{name} is not a two-phase image (0/1, 0/255 or boolean) and the model's training "
                            f"images used no threshold to binarise it with; binarise it first") from None
    values = data.get("phase_values")
    if values is None:
        raise UserError(f"the model records no phase values, so {name} cannot be mapped to its {phases} phases")
    found = np.unique(arr)
    unknown = sorted(set(found.tolist()) - set(values))
    if unknown:
        raise UserError(f"{name} holds values {unknown[:10]} that are none of the model's phase values {values}")
    return np.searchsorted(np.asarray(values), arr).astype(np.uint8)


def anchors_from(specs: Sequence[tuple[str, int, ImageLike]], data: dict) -> list[Anchor]:
    """(axis, index, image or file) triples -> Anchors, each image phase-mapped by ``to_labels``."""
    out = []
    for axis, index, image in specs:
        labels = to_labels(image, data)
        if labels.ndim == 3 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.ndim != 2:
            raise UserError(f"an anchor is one 2D slice; got shape {labels.shape} for {axis}={index}")
        out.append(Anchor(axis, int(index), labels))
    return out


def stack_anchors(axis: str, stack: ImageLike, every: int, data: dict, start: int = 0) -> list[Anchor]:
    """Serial sections: slice j of ``stack`` (N, h, w) at index start + j * every along ``axis``."""
    if every < 1 or start < 0:
        raise UserError(f"--every must be >= 1 and the first index >= 0, got {every} and {start}")
    labels = to_labels(stack, data)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise UserError(f"a section stack is (N, h, w); got shape {labels.shape}")
    return [Anchor(axis, start + j * every, labels[j]) for j in range(labels.shape[0])]


def from_cli(single: Sequence[str], stack: str | None, every: int | None, data: dict) -> list[Anchor]:
    """``--anchor AXIS=INDEX:FILE`` (each of ``single``) and ``--anchors AXIS:FILE --every K`` -> Anchors."""
    if (stack is None) != (every is None):
        raise UserError("--anchors AXIS:FILE and --every K go together")
    out = anchors_from([parse_anchor(s) for s in single], data)
    if stack is not None:
        axis, path = parse_stack(stack)
        out += stack_anchors(axis, path, every, data)
    return out


def describe(anchors: Sequence[Anchor]) -> list[dict]:
    """JSON-able record of anchors for sidecars: axis, index and a hash of the labels."""
    import hashlib

    return [{"axis": a.axis, "index": a.index, "sha256": hashlib.sha256(np.ascontiguousarray(a.labels)).hexdigest()}
            for a in anchors]


class Anchors:
    """The anchored voxels of a (D, H, W) volume: ``mask`` (D, H, W) bool, ``known`` (C, D, H, W) x_0 values.

    ``skip_parallel`` (serial sections: two or more anchors, all along one axis): the sampler skips the plane
    of the anchors (``skip``), whose calls cannot carry them into the free slices.
    """

    def __init__(self, anchors: Sequence[Anchor], shape: tuple[int, int, int], channels: int,
                 skip_parallel: bool = True):
        axes = {a.axis for a in anchors}
        self.skip = PLANES[AXES.index(axes.pop())] if skip_parallel and len(axes) == 1 < len(anchors) else None
        if not anchors:
            raise UserError("no anchors given")
        self.mask = torch.zeros(shape, dtype=torch.bool)
        labels = torch.zeros(shape, dtype=torch.long)
        n_phases = max(2, channels)
        for a in anchors:
            if a.axis not in AXES:
                raise UserError(f"anchor axis must be one of {', '.join(AXES)}, got {a.axis!r}")
            k = AXES.index(a.axis)
            side = [s for i, s in enumerate(shape) if i != k]
            if not 0 <= a.index < shape[k]:
                raise UserError(f"anchor {a.axis}={a.index} lies outside the volume (0..{shape[k] - 1} along {a.axis})")
            if list(a.labels.shape) != side:
                raise UserError(f"anchor {a.axis}={a.index} is {a.labels.shape[0]}x{a.labels.shape[1]}, but a slice of "
                                f"the {shape[0]}x{shape[1]}x{shape[2]} volume at fixed {a.axis} is {side[0]}x{side[1]}")
            if int(a.labels.max()) >= n_phases:
                raise UserError(f"anchor {a.axis}={a.index} has phase {int(a.labels.max())}; the model has {n_phases}")
            new = torch.from_numpy(a.labels.astype(np.int64))
            plane_mask, plane_labels = self.mask.select(k, a.index), labels.select(k, a.index)
            clash = plane_mask & (plane_labels != new)
            if clash.any():
                raise UserError(f"anchor {a.axis}={a.index} disagrees with another anchor at {int(clash.sum())} voxels")
            plane_mask.fill_(True)
            plane_labels.copy_(new)
        one_hot = torch.nn.functional.one_hot(labels, n_phases).permute(3, 0, 1, 2).float()
        self.known = (one_hot[1:] if channels == 1 else one_hot) * 2 - 1  # the training scaling, x = 2 I - 1
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def phase_fractions(self) -> list[float]:
        """Phase fractions of the anchored voxels, as a volume-fraction target: [phi] (one channel), else K values."""
        return ((self.known[:, self.mask] + 1) / 2).mean(1).tolist()

    @property
    def fraction(self) -> float:
        """Share of the volume's voxels that are anchored."""
        return float(self.mask.float().mean())

    def impose(self, x: torch.Tensor, alphabar: float, generators: Sequence[torch.Generator]) -> None:
        """In place: anchored voxels of x (V, C, D, H, W), a view in canonical order, <- sqrt(ab) a + sqrt(1-ab) z.

        z: per volume from its own generator (CPU draws, so the volume is the same on any device).
        """
        mask, values = self._on(x.device)
        for v, gen in enumerate(generators):
            if alphabar >= 1.0:
                x[v][:, mask] = values
                continue
            z = torch.randn(values.shape, generator=gen).to(x.device)
            x[v][:, mask] = alphabar ** 0.5 * values + (1 - alphabar) ** 0.5 * z

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask (D, H, W) and the anchored values (C, M) on ``device``, gathered once."""
        if device not in self._cache:
            mask = self.mask.to(device)
            self._cache[device] = (mask, self.known.to(device)[:, mask])
        return self._cache[device]


def point_estimate(realizations: torch.Tensor, phi: float) -> torch.Tensor:
    """A point estimate from anchored two-phase realizations (N, D, H, W) uint8 -> (D, H, W) uint8.

    Each voxel's share of realizations in phase 1, thresholded so that a fraction ``phi`` of the voxels is
    phase 1 (ties broken by the share's 3x3x3 mean): the posterior's best guess voxel by voxel at the right
    phase fraction, not a realization (it is smoother than the material; its S2 and L are not the material's).
    Voxels on which all realizations agree (the anchors) keep their value unless phi forces otherwise.
    """
    if realizations.dim() != 4 or realizations.shape[0] < 1 or int(realizations.max()) > 1:
        raise UserError(f"an estimate needs N two-phase volumes (N, D, H, W); got shape {tuple(realizations.shape)}"
                        f" with phases up to {int(realizations.max())}")
    share = realizations.float().mean(0)
    smooth = torch.nn.functional.avg_pool3d(share[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    order = torch.argsort((share + 1e-3 * smooth).flatten(), descending=True)
    out = torch.zeros(share.numel(), dtype=torch.uint8)
    out[order[:round(phi * share.numel())]] = 1
    return out.view(share.shape)
