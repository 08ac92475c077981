"""Training state files, for exact resume.

A state file holds tensors ``model/<name>`` (raw weights), ``ema/<name>``, ``optim/<param>/<key>``,
``rng/torch``, ``rng/cuda/<i>`` and, in its header, JSON with the step, the config and the optimizer's
non-tensor state (also written beside it as ``<file>.json``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..io.checkpoint import read_safetensors, write_safetensors

STATE_FORMAT = "micro3diff-train-state/1"


def state_tensors(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Flatten weights, EMA, optimizer and RNG state into (named tensors, JSON-able dict)."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    opt_sd = opt.state_dict()
    scalars: dict = {}
    for pid, st in opt_sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim/{pid}/{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"param_groups": opt_sd["param_groups"], "optim_scalars": scalars}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta


def load_state_tensors(tensors: dict, meta: dict, model: torch.nn.Module, ema: torch.nn.Module,
                       opt: torch.optim.Optimizer) -> None:
    """Inverse of ``state_tensors``: restore weights, EMA, optimizer state and RNG states in place."""
    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model/"))
    ema.load_state_dict(part("ema/"))
    state: dict = {}
    for key, val in part("optim/").items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = val
    for pid, st in meta["optim_scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[f"rng/cuda/{i}"] for i in range(len(part("rng/cuda/")))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def save_state(path: Path, tensors: dict, meta: dict) -> None:
    """Write a training state (safetensors, JSON in the header) and its ``.json`` twin, atomically."""
    write_safetensors(path, tensors, "micro3diff_state", {"format": STATE_FORMAT, **meta})


def load_state(path: Path) -> tuple[dict, dict]:
    """Read a training state file: (tensors, metadata). UserError if it is not one."""
    meta, tensors = read_safetensors(path, "micro3diff_state", "training state", tensors=True)
    if meta.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: unsupported training state format {meta.get('format')!r}")
    return tensors, meta
