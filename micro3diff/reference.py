"""Pure-PyTorch twins of every compiled op, written for clarity (DESIGN.md 1.3).

Each twin computes exactly what its compiled op computes, given the same inputs; tests compare them.
"""
from __future__ import annotations

import torch


def rotate_plane(x: torch.Tensor) -> torch.Tensor:
    """Plane rotation R: (V, D, C, H, W) -> (V, H, C, W, D), out[v, h, c, w, d] = in[v, d, c, h, w]."""
    return x.permute(0, 3, 2, 4, 1).contiguous()


def fused_step(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *, rotate: bool,
               noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """``R(c_x*x - c_eps*eps + c_z*z)``; x, eps, noise: (V, D, C, H, W)."""
    z = noise if noise is not None else philox_normal(x.shape, seed, offset, device=x.device)
    out = c_x * x - c_eps * eps.float() + c_z * z
    return rotate_plane(out) if rotate else out.contiguous()


def fused_step_(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *,
                noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """In place ``x <- c_x*x - c_eps*eps + c_z*z``; returns x."""
    z = noise if noise is not None else philox_normal(x.shape, seed, offset, device=x.device)
    x.mul_(c_x).sub_(c_eps * eps.float()).add_(c_z * z)
    return x


def philox_normal(shape: torch.Size | tuple[int, ...], seed: int, offset: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normals, bit-compatible (to float rounding) with the kernels' in-kernel Philox draw."""
    raise NotImplementedError("philox_normal: written with the fused_step kernels")
