"""Shared input checks: numeric options, output paths, memory needed before a big allocation."""
from __future__ import annotations

import glob
import math
import os
from pathlib import Path
from typing import Iterable

from .errors import UserError

GiB = 2**30


def number(name: str, value: float | int | None, lo: float | None = None, hi: float | None = None) -> None:
    """UserError unless ``value`` (None: not given) is a finite number with lo <= value <= hi."""
    if value is None:
        return
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(b for b in (lo is not None and f">= {lo:g}", hi is not None and f"<= {hi:g}") if b)
        raise UserError(f"{name} must be {bounds}, got {value}")


def machine_memory(device=None) -> int:
    """Bytes of memory on ``device``: the GPU's total for CUDA, else this machine's physical memory."""
    if device is not None and getattr(device, "type", device) == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_memory(needed: float, what: str, device=None, hint: str = "") -> None:
    """UserError before allocating if ``what`` needs more than ``device`` (default: this machine) has."""
    have = machine_memory(device)
    if needed > have:
        where = "this GPU" if device is not None and getattr(device, "type", device) == "cuda" else "this machine"
        raise UserError(f"{what} needs about {needed / GiB:,.1f} GiB of memory but {where} has "
                        f"{have / GiB:,.1f} GiB{'; ' + hint if hint else ''}")


def writable_outputs(paths: Iterable[Path]) -> None:
    """UserError if an output path is a folder; remove partial files a killed writer left for these outputs."""
    for path in paths:
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder")
        for part in path.parent.glob(f".{glob.escape(path.name)}.*.part*") if path.parent.is_dir() else ():
            part.unlink(missing_ok=True)
