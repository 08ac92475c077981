"""Dispatch: the compiled op for a tensor's device if it is built, else the pure-PyTorch twin.

``M3D_OPS=auto`` (default) picks compiled when available and warns once per (op, device) when it
falls back; ``M3D_OPS=compiled`` requires the compiled op (error if missing); ``M3D_OPS=reference``
always uses the twin in ``micro3diff.reference``.
"""
from __future__ import annotations

import os
import warnings

import torch

from . import _ext, reference
from .errors import UserError

_warned: set[tuple[str, str]] = set()


def _mode() -> str:
    mode = os.environ.get("M3D_OPS", "auto")
    if mode not in ("auto", "compiled", "reference"):
        raise UserError(f"M3D_OPS must be auto, compiled or reference, got {mode!r}")
    return mode


def use_compiled(op: str, device: torch.device) -> bool:
    """Whether ``op`` runs compiled on ``device`` under the current ``M3D_OPS`` mode."""
    mode = _mode()
    if mode == "reference":
        return False
    if _ext.has_kernel(op, device.type):
        return True
    if mode == "compiled":
        raise RuntimeError(f"M3D_OPS=compiled but micro3diff::{op} has no {device.type} kernel. {_ext.INSTALL_HINT}")
    if (op, device.type) not in _warned:
        _warned.add((op, device.type))
        # stacklevel 4: the caller of the public op (use_compiled <- _dispatch <- op <- caller)
        warnings.warn(f"micro3diff::{op}: no compiled {device.type} kernel, using the PyTorch reference twin", stacklevel=4)
    return False


def _int64(v: int) -> int:
    """The int64 with v's low 64 bits (seeds/offsets are 64-bit words; torch seeds reach 2^64 - 1)."""
    return (v + 2**63) % 2**64 - 2**63


@torch.compiler.assume_constant_result
def _use_compiled_when_tracing(op: str, device_type: str) -> bool:
    """``use_compiled`` evaluated once while torch.compile traces, its answer a constant of the graph (the kernel
    lookup cannot be traced: without this every op call would break the graph)."""
    return use_compiled(op, torch.device(device_type))


def _dispatch(op: str, x: torch.Tensor, *args, **kwargs):
    """``torch.ops.micro3diff.<op>`` if it runs compiled on x's device, else ``reference.<op>``, with the same
    arguments. The schema takes ``kwargs`` positionally, in their order (``seed`` and ``offset`` as int64
    words); an in-place op returns x."""
    tracing = torch.compiler.is_compiling()
    if not (_use_compiled_when_tracing(op, x.device.type) if tracing else use_compiled(op, x.device)):
        return getattr(reference, op)(x, *args, **kwargs)
    values = [_int64(v) if k in ("seed", "offset") else v for k, v in kwargs.items()]
    out = getattr(torch.ops.micro3diff, op)(x, *args, *values)
    return x if out is None else out


def fused_step(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *, rotate: bool,
               noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """``R(c_x*x - c_eps*eps + c_z*z)`` out of place. x: (V, D, C, H, W) float32; eps: same shape, float32,
    bfloat16 or float16.

    z is ``noise`` (x's shape, float32) when given, else standard normals drawn by Philox from (seed, offset)
    (``reference.philox_normal``). Returns (V, H, C, W, D) when ``rotate`` else (V, D, C, H, W).
    """
    return _dispatch("fused_step", x, eps, float(c_x), float(c_eps), float(c_z), rotate=rotate, noise=noise,
                     seed=seed, offset=offset)


def fused_step_(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *,
                noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """In place ``x <- c_x*x - c_eps*eps + c_z*z`` (identity plane); x contiguous. Returns x."""
    return _dispatch("fused_step_", x, eps, float(c_x), float(c_eps), float(c_z), noise=noise, seed=seed,
                     offset=offset)


def fused_step_rotate_(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *,
                       noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """In place ``x <- R(c_x*x - c_eps*eps + c_z*z)``; x: (V, N, C, N, N) contiguous (cubic). Returns x."""
    return _dispatch("fused_step_rotate_", x, eps, float(c_x), float(c_eps), float(c_z), noise=noise, seed=seed,
                     offset=offset)


def fused_step_rotate(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *,
                      noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """The sampler's rotating update ``R(c_x*x - c_eps*eps + c_z*z)``: (V, D, C, H, W) -> (V, H, C, W, D).

    Cubic contiguous x is rotated in place (x is overwritten and returned): no second volume-sized buffer.
    Other shapes go out of place and leave x unchanged.
    """
    if x.shape[1] == x.shape[3] == x.shape[4] and x.is_contiguous():
        return fused_step_rotate_(x, eps, c_x, c_eps, c_z, noise=noise, seed=seed, offset=offset)
    return fused_step(x, eps, c_x, c_eps, c_z, rotate=True, noise=noise, seed=seed, offset=offset)


# --- network ------------------------------------------------------------------------------------


def group_norm_silu(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(group_norm(x) * (1 + scale) + shift)`` in two passes over x, for inference (no autograd).
    x: (N, C, H, W) float32, NCHW or channels_last (kept); weight, bias: (C,); scale, shift: (N, C) or None."""
    return _dispatch("group_norm_silu", x, int(groups), weight, bias, float(eps), scale, shift)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, circular: bool,
            upsample: bool = False) -> torch.Tensor:
    """``conv2d(x, weight, bias)``, 3x3, stride 1, padding 1 (zero or circular), of x upsampled 2x (nearest) if
    ``upsample``, by Winograd F(4x4, 3x3), for inference (no autograd). x: (N, C, H, W) float32, NCHW or
    channels_last (kept); weight: (O, C, 3, 3); bias: (O,) -> (N, O, H, W), or (N, O, 2H, 2W) with upsample."""
    return _dispatch("conv3x3", x, weight, bias, bool(circular), bool(upsample))


# --- metrics ------------------------------------------------------------------------------------


def lineal_path(x: torch.Tensor, z_max: int, periodic: bool) -> torch.Tensor:
    """Torquato L(z) along every axis. x: (B, *spatial) uint8, nonzero = phase -> (B, ndim, z_max + 1) float64."""
    return _dispatch("lineal_path", x.contiguous(), int(z_max), bool(periodic))


if _ext.HAS_EXT:

    @torch.library.register_fake("micro3diff::lineal_path")
    def _lineal_path_fake(x: torch.Tensor, z_max: int, periodic: bool) -> torch.Tensor:
        return x.new_empty((x.shape[0], x.dim() - 1, z_max + 1), dtype=torch.float64)
