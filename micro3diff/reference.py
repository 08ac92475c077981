"""Pure-PyTorch twins of every compiled op, written for clarity (DESIGN.md 1.3).

Each twin computes exactly what its compiled op computes, given the same inputs; tests compare them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def fused_step_rotate_(x: torch.Tensor, eps: torch.Tensor, c_x: float, c_eps: float, c_z: float, *,
                       noise: torch.Tensor | None = None, seed: int = 0, offset: int = 0) -> torch.Tensor:
    """In place ``x <- R(c_x*x - c_eps*eps + c_z*z)`` for cubic x: (V, N, C, N, N); returns x."""
    return x.copy_(fused_step(x, eps, c_x, c_eps, c_z, rotate=True, noise=noise, seed=seed, offset=offset))


# Philox4x32-10 + Box-Muller, the convention of csrc/philox.h (read it first). uint32 words live in int64
# tensors; every float32 operation below is one torch op, in the kernels' order, so the bits agree.
_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of m * c, uint32 m and c, without overflowing int64 (16-bit split of c)."""
    low = m * (c & 0xFFFF)  # < 2^48
    high = m * (c >> 16) + (low >> 16)  # m*c = high * 2^16 + (low mod 2^16), high < 2^49
    return high >> 16, ((high & 0xFFFF) << 16) | (low & 0xFFFF)


def philox4x32_10(counter: list[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 of 4 counter words (int64 tensors holding uint32) under a 2-word key."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def _log_unit(u: torch.Tensor) -> torch.Tensor:
    """ln u for float32 u in [2^-24, 1]: u = m 2^e, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1))."""
    bits = u.view(torch.int32)
    m = (bits & 0x7FFFFF) | 0x3F800000
    big = m > 0x3FB504F3  # m > sqrt(2): halve m
    m = torch.where(big, m - 0x800000, m)
    e = (bits >> 23) - 127 + big.int()
    f = m.view(torch.float32) - 1.0
    s = f / (f + 2.0)
    s2 = s * s
    p = torch.full_like(s, 0.09090909)  # 1/11, then 1/9 ... 1/3 by Horner
    for coef in (0.11111111, 0.14285715, 0.2, 0.33333334):
        p = p * s2 + coef
    return e.float() * 0.6931472 + (s + s * s2 * p) * 2.0


def _sincos_turn(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of theta = q pi/2 + a, k = r >> 8, q = k >> 22, a = (k mod 2^22 - 2^21) 2pi/2^24."""
    k = r >> 8
    q = k >> 22
    a = ((k & 0x3FFFFF) - 0x200000).float() * (6.2831855 * 2.0**-24)
    a2 = a * a
    ps = torch.full_like(a, 2.7557319e-06)  # 1/9!, then -1/7! ... -1/3!
    for coef in (-0.0001984127, 0.008333334, -0.16666667):
        ps = ps * a2 + coef
    sin = a + a * a2 * ps
    pc = torch.full_like(a, -2.755732e-07)  # -1/10!, then 1/8! ... -1/2
    for coef in (2.4801588e-05, -0.0013888889, 0.041666668, -0.5):
        pc = pc * a2 + coef
    cos = pc * a2 + 1.0
    odd = (q & 1) == 1
    x, y = torch.where(odd, sin, cos), torch.where(odd, cos, sin)
    return torch.where((q == 1) | (q == 2), -x, x), torch.where(q >= 2, -y, y)


def philox_normal(shape: torch.Size | tuple[int, ...], seed: int, offset: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normals of ``shape`` (float32), the kernels' in-kernel draw: element i (flat index) is lane
    i % 4 of Philox4x32-10(counter=(i//4, offset), key=seed) through Box-Muller (csrc/philox.h)."""
    n = math.prod(shape)
    seed, offset = seed & 0xFFFFFFFFFFFFFFFF, offset & 0xFFFFFFFFFFFFFFFF
    g = torch.arange((n + 3) // 4, dtype=torch.int64, device=device)
    counter = [g & _MASK32, g >> 32, torch.full_like(g, offset & _MASK32), torch.full_like(g, offset >> 32)]
    r = philox4x32_10(counter, (seed & _MASK32, seed >> 32))
    z = []
    for ru, ra in ((r[0], r[1]), (r[2], r[3])):
        # correctly rounded float32 sqrt (CPU torch.sqrt on float32 may be 1 ulp off: MKL VML)
        rho = torch.sqrt(_log_unit(((ru >> 8) + 1).float() * 2.0**-24).double() * -2.0).float()
        cos, sin = _sincos_turn(ra)
        z += [rho * cos, rho * sin]
    return torch.stack(z, dim=1).flatten()[:n].view(shape)


# --- network --------------------------------------------------------------------------------------


def group_norm_silu(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(group_norm(x) * (1 + scale) + shift)``, the U-Net's normalised activation. x: (N, C, H, W);
    weight, bias: (C,); scale, shift: (N, C) (the time embedding's FiLM) or None."""
    h = F.group_norm(x, groups, weight, bias, eps)
    if scale is not None:
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    return F.silu(h)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, circular: bool,
            upsample: bool = False) -> torch.Tensor:
    """3x3 convolution, stride 1, padding 1: zero, or circular (periodic), of x upsampled 2x by nearest neighbour
    if ``upsample``. x: (N, C, H, W); weight: (O, C, 3, 3); bias: (O,) -> (N, O, H, W) (2H, 2W with upsample)."""
    if upsample:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    if circular:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), weight, bias)
    return F.conv2d(x, weight, bias, padding=1)


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
