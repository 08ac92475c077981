"""Files in and out: arrays (TIFF / .npy / PNG), atomic writes, JSON sidecars, provenance.

Every writer goes through ``atomic_path``: the data lands under a temporary name in the target's
folder and is renamed into place only when complete, so an interrupted run never leaves a partial file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import torch

ARRAY_SUFFIXES = (".npy", ".tif", ".tiff", ".png", ".vti")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (dataclasses allowed) as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def provenance() -> dict:
    """Versions and host facts for sidecars: micro3diff, torch, numpy, python, platform, date, kernels."""
    import torch

    from . import __version__, _ext

    return {
        "micro3diff": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernels": _ext.build_info(),
    }


def device_name(device: torch.device) -> str:
    """Human name of a device: the GPU's name, or the CPU model from /proc/cpuinfo."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


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

            arr = tifffile.imread(path)
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


def write_array(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write a 2D/3D array as .npy, .tif/.tiff (ImageJ-readable stack), .png (2D) or .vti (VTK), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".vti":
        from .vti import write_vti

        return write_vti(path, arr)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, arr, imagej=arr.dtype in (np.uint8, np.uint16, np.float32) and arr.ndim in (2, 3))
        elif suffix == ".png":
            from PIL import Image

            Image.fromarray(arr).save(tmp, format="PNG")
        else:
            raise UserError(f"{path}: unsupported output type {suffix!r} (use .npy, .tif, .png or .vti)")
