"""Which device and which share of the work a process takes: ``--device`` names, torchrun's RANK / WORLD_SIZE."""
from __future__ import annotations

import os

import torch

from .errors import UserError


def pick_device(name: str | None) -> torch.device:
    """``--device`` value (None/"auto" -> cuda if available else cpu) as a torch.device; UserError if unusable."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but torch sees no CUDA device")
    return device


def rank_device(name: str | None) -> torch.device:
    """``pick_device``, where an unnamed device under torchrun is cuda:LOCAL_RANK (when CUDA is available)."""
    if name is None and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    return pick_device(name)


def rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as set by torchrun, (0, 1) otherwise."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers") from None
    if not 0 <= rank < world:
        raise UserError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return rank, world


def machine_facts() -> dict:
    """``m3d info``: provenance (versions, kernels) with torch's CUDA, whether a GPU is seen, the default device."""
    from .io.files import provenance

    facts = provenance()
    facts["torch_cuda"] = torch.version.cuda
    facts["cuda_available"] = torch.cuda.is_available()
    facts["device"] = str(pick_device(None))
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts
