"""Phases and thresholds: how values become phase labels, for training images, metrics and generated samples.

- ``parse_threshold``: a threshold option (None, a number or "otsu"); ``otsu_threshold``: Otsu's rule.
- ``binary_labels`` / ``multiphase_labels``: training images (numpy) -> uint8 labels 0..K-1; binary input
  ({0, 1}, {0, 255}, bool) as is, other values only with a threshold, integer label images with ``phases=K``.
- ``binarize``: the indicator (x == phase) of a metric input (tensor), thresholded if asked.
- ``to_phases``: network outputs (N, C, ...) -> uint8 labels (threshold at 0 for C = 1, else argmax over C).
"""
from __future__ import annotations

from typing import Literal, Union

import numpy as np
import torch

from .errors import UserError

ArrayLike = Union[torch.Tensor, np.ndarray]
Threshold = Union[float, Literal["otsu"], None]
MAX_LABELS = 16  # integer images with 3..MAX_LABELS distinct values are reported as label images


def parse_threshold(value: float | str | None, name: str = "threshold") -> float | str | None:
    """None, "otsu" or a float (from a number or numeric string); UserError naming option ``name`` otherwise."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    if value.strip().lower() == "otsu":
        return "otsu"
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{name} must be a number or 'otsu', got {value!r}") from None


def otsu_threshold(values: ArrayLike) -> float:
    """Otsu's threshold: the t maximising the between-class variance of {v <= t} and {v > t}.

    Exact on integer images (one histogram bin per value), 256 bins otherwise. UserError for NaN/inf or a
    constant input.
    """
    v = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).ravel()
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        raise UserError("input contains NaN or infinite values")
    if v.size == 0 or v.min() == v.max():
        raise UserError(f"cannot threshold a constant input (all values {v.min() if v.size else 'missing'})")
    if np.issubdtype(v.dtype, np.integer) or v.dtype == bool:
        lo = int(v.min())
        hist = np.bincount((v.astype(np.int64) - lo)).astype(np.float64)
        centers = lo + np.arange(hist.size, dtype=np.float64)
    else:
        hist, edges = np.histogram(v.astype(np.float64), bins=256)
        hist, centers = hist.astype(np.float64), (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist) / hist.sum()                       # weight of class {v <= centers[i]}
    mu = np.cumsum(hist * centers) / hist.sum()             # its unnormalised mean
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(centers[int(np.argmax(between))])


def _distinct(arr: np.ndarray) -> np.ndarray:
    """Sorted distinct values (bincount for 8-bit data, which is most of it)."""
    if arr.dtype in (np.uint8, np.bool_):
        return np.flatnonzero(np.bincount(arr.ravel().view(np.uint8), minlength=2)).astype(arr.dtype)
    return np.unique(arr)


def _is_integral(values: np.ndarray) -> bool:
    return values.dtype == bool or np.issubdtype(values.dtype, np.integer) or bool(np.all(values == np.round(values)))


def binary_labels(arr: np.ndarray, name: str, threshold: float | str | None) -> tuple[np.ndarray, float | None]:
    """Two-phase labels (uint8 0/1) of ``arr`` and the threshold used (None for binary input)."""
    if threshold is not None:
        t = otsu_threshold(arr) if threshold == "otsu" else float(threshold)
        return (arr > t).astype(np.uint8), t
    if arr.dtype == bool:
        return arr.astype(np.uint8), None
    values = _distinct(arr)
    if set(values.tolist()) <= {0, 1}:
        return arr.astype(np.uint8), None
    if set(values.tolist()) <= {0, 255}:
        return (arr > 0).astype(np.uint8), None
    if _is_integral(values) and 3 <= values.size <= MAX_LABELS:
        raise UserError(f"{name} looks like a {values.size}-phase label image (values {values.tolist()}); use "
                        f"--phases {values.size} for one-hot multiphase training, or --threshold to binarise it")
    raise UserError(f"{name} is not binary ({values.size} distinct values in [{values.min()}, {values.max()}]); "
                    f"pass --threshold VALUE or --threshold otsu")


def multiphase_labels(arrays: list[np.ndarray], names: list[str], phases: int) -> tuple[list[np.ndarray], list]:
    """K-phase labels (uint8 0..K-1) of integer label images: the K distinct values of all files, in sorted order.

    Returns the labels and the original value of each phase.
    """
    distinct = [_distinct(a) for a in arrays]
    for d, name in zip(distinct, names):
        if not _is_integral(d):
            raise UserError(f"{name} has non-integer values; --phases K needs integer label images")
    values = np.unique(np.concatenate(distinct))
    if values.size != phases:
        raise UserError(f"the images hold {values.size} distinct values {values.tolist()[:20]}, but --phases is "
                        f"{phases}")
    return [np.searchsorted(values, a).astype(np.uint8) for a in arrays], values.tolist()


def as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise UserError(f"expected an array or tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise UserError(f"input is empty (shape {tuple(x.shape)})")
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few torch ops support these (16-bit TIFFs)
        x = x.to(torch.int64)
    return x


def binarize(x: ArrayLike, *, phase: int | None = None, threshold: Threshold = None) -> torch.Tensor:
    """Phase indicator I = (x == phase) as uint8 {0, 1}, same shape as x; see ``micro3diff.metrics.correlation``."""
    x = as_tensor(x)
    if threshold is not None:
        if phase not in (None, 0, 1):
            raise UserError(f"a thresholded input has phases 0 and 1, got phase {phase} (m3d: --phase)")
        t = otsu_threshold(x) if threshold == "otsu" else float(threshold)
        values = x.double()
        if not bool(torch.isfinite(values).all()):
            raise UserError("input contains NaN or infinite values")
        return ((values > t) if phase in (None, 1) else (values <= t)).to(torch.uint8)
    if x.dtype == torch.bool:
        x = x.view(torch.uint8)
    if x.is_complex() or (x.is_floating_point() and not bool((x == x.round()).all())):
        raise UserError(f"input is not binary (values in [{_value_range(x)}]); pass a threshold (a number or 'otsu')")
    if phase is None:
        lo, hi = torch.aminmax(x)
        if x.dtype == torch.uint8 and hi == 255 and bool(((x == 0) | (x == 255)).all()):
            return (x > 0).to(torch.uint8)  # 0/255 binary images, as training reads them (binary_labels)
        if lo < 0 or hi > 1:
            raise UserError(
                f"input is not binary {{0, 1}} (values in [{_value_range(x)}]); "
                "pass phase=K (m3d: --phase K) for a label image or a threshold (a number or 'otsu')"
            )
        if x.dtype == torch.uint8:
            return x
        phase = 1
    return (x == phase).to(torch.uint8)


def _value_range(x: torch.Tensor) -> str:
    return "complex" if x.is_complex() else f"{x.min().item():g}, {x.max().item():g}"


def to_phases(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, *spatial) uint8: C = 1 thresholded at 0 (phases scaled to [-1, 1]), else argmax over C."""
    return (x[:, 0] > 0 if x.shape[1] == 1 else x.argmax(1)).to(torch.uint8)
