"""Arrays in and out: TIFF / .npy / PNG / .vti, phase labels with their stored values, voxel sizes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .files import atomic_path

ARRAY_SUFFIXES = (".npy", ".tif", ".tiff", ".png", ".vti")


_PHASE_INFO = "micro3diff phase values:"  # ImageJ Info line of write_phases' TIFFs: the stored value of each phase
_MICRO = {"micron", "microns", "µm", "μm", "\\u00B5m"}


def voxel_size3(value: float | Sequence[float] | None) -> tuple[float, float, float] | None:
    """A voxel size as (d, h, w): None stays None, one number is isotropic. UserError unless positive and finite."""
    if value is None:
        return None
    v = np.asarray(value, dtype=float).ravel()
    v = np.repeat(v, 3) if v.size == 1 else v
    if v.size != 3 or not (np.isfinite(v).all() and (v > 0).all()):
        raise UserError(f"voxel size must be one positive number or three (d, h, w), got {value!r}")
    return tuple(float(x) for x in v)


def read_voxel_size(path: str | os.PathLike) -> tuple[tuple[float, float, float], str] | None:
    """(voxel size (d, h, w), unit) recorded for an array file, or None when nothing records one.

    TIFF tags first (``_tiff_voxel_size``), else the ``voxel_size`` and ``unit`` of the JSON sidecar that
    ``m3d sample`` (``<stem>.json``) or ``m3d synth`` (``<name>.json``) wrote beside the file.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        found = _tiff_voxel_size(path)
        if found:
            return found
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        try:
            meta = json.loads(sidecar.read_text())
            size = voxel_size3(meta["voxel_size"])
        except (OSError, ValueError, KeyError, TypeError, UserError):  # absent, foreign or without a size
            continue
        if size:
            return size, str(meta.get("unit") or "um")
    return None


def _tiff_voxel_size(path: Path) -> tuple[tuple[float, float, float], str] | None:
    """ImageJ files: ``spacing`` (d), X/Y resolution (w, h) and ``unit``; other TIFFs: X/Y resolution in inch or
    cm, returned in um. A 2D image's d is its w. None when the file records no physical size.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page, ij = tif.pages[0], tif.imagej_metadata or {}
            xres, yres = page.resolution
            res_unit = int(page.resolutionunit)
    except Exception:  # unreadable files are reported by read_array
        return None
    if "spacing" in ij or (ij.get("unit") and (xres, yres) != (1, 1)):
        unit = str(ij.get("unit") or "px")
        w, h = 1 / xres, 1 / yres
    elif res_unit in (2, 3) and (xres, yres) != (1, 1):  # inch, centimetre
        unit, per = "um", 25400.0 if res_unit == 2 else 10000.0
        w, h = per / xres, per / yres
    else:
        return None
    return voxel_size3((float(ij.get("spacing", w)), h, w)), "um" if unit in _MICRO else unit


def phase_values(n_phases: int) -> list[int]:
    """TIFF value of each phase: 0/255 for two phases (visible in any viewer), else the labels 0..K-1."""
    return [0, 255] if n_phases == 2 else list(range(n_phases))


def write_phases(path: str | os.PathLike, phases: np.ndarray, n_phases: int | None = None, *,
                 voxel_size: float | Sequence[float] | None = None, unit: str = "um") -> dict[str, int]:
    """Write phase labels (D, H, W) or (H, W), uint8 0..K-1, atomically; returns {stored value: phase}.

    .tif: two phases stored as 0/255, K phases as 0..K-1 with display range 0..K-1, the mapping also in the
    ImageJ Info (``read_array`` maps it back); .npy / .vti: the labels. ``n_phases``: default max label + 1 (>= 2).
    """
    phases = np.asarray(phases)
    n_phases = n_phases or max(2, int(phases.max()) + 1)
    values = phase_values(n_phases) if Path(path).suffix.lower() in (".tif", ".tiff") else list(range(n_phases))
    write_array(path, np.asarray(values, np.uint8)[phases], voxel_size=voxel_size, unit=unit,
                info=f"{_PHASE_INFO} {' '.join(map(str, values))}", display_range=(0, values[-1]))
    return {str(v): k for k, v in enumerate(values)}


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a 2D image or 3D volume from .npy, .tif/.tiff (stack) or .png. Raises UserError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                arr = tif.asarray()
                info = str((tif.imagej_metadata or {}).get("Info", ""))
            if info.startswith(_PHASE_INFO):  # written by write_phases: stored values -> phase labels
                values = np.asarray(info[len(_PHASE_INFO):].split(), dtype=np.int64)
                arr = np.searchsorted(values, arr).astype(np.uint8)
        elif suffix == ".vti":
            from .vti import read_vti

            arr = read_vti(path)[0]
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "1") else im)
        else:
            raise UserError(f"{path}: unsupported file type {suffix!r} (use one of {', '.join(ARRAY_SUFFIXES)})")
    except UserError:
        raise
    except Exception as exc:  # corrupt or truncated files surface as many exception types
        raise UserError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if arr.size == 0:
        raise UserError(f"{path} is empty")
    return np.asarray(arr)


def write_array(path: str | os.PathLike, arr: np.ndarray, *, voxel_size: float | Sequence[float] | None = None,
                unit: str = "um", display_range: tuple[float, float] | None = None, info: str | None = None) -> None:
    """Write a 2D/3D array as .npy, .tif/.tiff, .png (2D) or .vti (VTK), atomically.

    TIFF: an ImageJ stack (axes ZYX, slices = D) for uint8/uint16/float32, with ``voxel_size`` (d, h, w) as
    ImageJ ``spacing`` + ``unit`` and X/Y resolution, ``display_range`` (min, max) and ``info`` (ImageJ Info);
    .vti: ``voxel_size`` is the spacing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    spacing = voxel_size3(voxel_size)
    if suffix == ".vti":
        from .vti import write_vti

        return write_vti(path, arr, spacing=spacing or 1.0)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            imagej = arr.dtype in (np.uint8, np.uint16, np.float32) and arr.ndim in (2, 3)
            meta: dict[str, Any] = {"axes": "ZYX"[-arr.ndim:]}
            if spacing:
                meta.update(spacing=spacing[0], unit=unit)
            if display_range:
                meta.update(min=display_range[0], max=display_range[1])
            if info:
                meta["Info"] = info
            tifffile.imwrite(tmp, arr, imagej=imagej, metadata=meta if imagej else {},
                             resolution=(1 / spacing[2], 1 / spacing[1]) if spacing else None)
        elif suffix == ".png":
            from PIL import Image

            Image.fromarray(arr).save(tmp, format="PNG")
        else:
            raise UserError(f"{path}: unsupported output type {suffix!r} (use .npy, .tif, .png or .vti)")
