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


# --- metrics (DESIGN 1.4) -----------------------------------------------------------------------


def lineal_path(x: torch.Tensor, z_max: int, periodic: bool) -> torch.Tensor:
    """Torquato L(z) along every axis. x: (B, *spatial) uint8, nonzero = phase -> (B, ndim, z_max + 1) float64.

    Voxel i of a line ends a segment of z + 1 phase voxels iff the run ending at i is longer than z,
    so the segment count for z is the number of voxels whose run so far exceeds z. Periodic lines
    are seen twice in a row, so runs crossing the end are counted whole.
    """
    batch, ndim = x.shape[0], x.dim() - 1
    z = torch.arange(z_max + 1, device=x.device)
    out = torch.empty(batch, ndim, z_max + 1, dtype=torch.float64, device=x.device)
    for a in range(ndim):
        line = (x != 0).movedim(a + 1, -1)  # (B, ..., n)
        n = line.shape[-1]
        if periodic:
            line = torch.cat([line, line], dim=-1)
        pos = torch.arange(line.shape[-1], device=x.device)
        last_zero = torch.where(line, -1, pos).cummax(dim=-1).values
        run = (pos - last_zero)[..., -n:].reshape(batch, -1)  # run length ending at each voxel, 0 off the phase
        counts = torch.zeros(batch, 2 * n + 1, dtype=torch.int64, device=x.device)
        counts.scatter_add_(1, run, torch.ones_like(run))
        longer = counts.flip(-1).cumsum(-1).flip(-1)  # longer[:, c] = voxels with run >= c
        windows = (n if periodic else n - z) * (run.shape[1] // n)
        out[:, a] = longer[:, z + 1].double() / windows
    return out
