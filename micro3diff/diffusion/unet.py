"""The 2D epsilon-prediction U-Net (Imagen-base family, paper A.1), fully convolutional.

An optional pixel-unshuffle stem (``stem`` = s > 1) folds each s x s patch into channels before the first
convolution and unfolds the output after the last: the network then runs at 1/s of the resolution with wider
convolutions, which a CPU runs much closer to its matmul ceiling (benchmarks/cpu_speed.py).
Levels ``dim * dim_mults[i]``, each with ``num_resnet_blocks`` time-conditioned residual blocks and
optional self-attention (``scaled_dot_product_attention``), downsampling between levels, a middle
block with attention, and a mirrored up path with skip connections. Any image side divisible by
``2 ** (len(dim_mults) - 1)`` works, so a model trained on 64^2 crops denoises slices of any such size.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops, reference
from ..errors import UserError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture. ``attention[i]``: self-attention at level i; heads x head_dim the attention width;
    ``stem``: pixel-unshuffle factor of the input (1: none)."""

    channels: int = 1
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4)
    attention: tuple[bool, ...] = (False, False, True)
    num_resnet_blocks: int = 2
    heads: int = 4
    head_dim: int = 32
    groups: int = 8
    stem: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        object.__setattr__(self, "attention", tuple(bool(a) for a in self.attention))
        if len(self.attention) != len(self.dim_mults):
            raise UserError(f"attention has {len(self.attention)} entries but dim_mults has {len(self.dim_mults)}")
        sizes = (self.dim, self.groups, self.heads, self.head_dim, self.channels, self.num_resnet_blocks, self.stem)
        if min(sizes) < 1 or self.dim % self.groups:
            raise UserError(f"invalid U-Net config: dim={self.dim} must be a multiple of groups={self.groups}; "
                            f"dim, groups, heads, head_dim, channels, num_resnet_blocks and stem must be >= 1")

    @property
    def divisor(self) -> int:
        """Image sides must be multiples of this."""
        return self.stem * 2 ** (len(self.dim_mults) - 1)

    def forward_bytes(self, h: int, w: int) -> int:
        """Rough peak memory of one h x w image's no-grad forward: skip tensors, working tensors, attention maps."""
        floats = 0.0
        for level, (mult, attn) in enumerate(zip(self.dim_mults, self.attention)):
            pixels = h * w / self.stem**2 / 4**level
            floats += (self.num_resnet_blocks + 8) * self.dim * mult * pixels
            if attn or level == len(self.dim_mults) - 1:  # the middle block attends at the deepest level
                floats += self.heads * pixels**2
        return int(4 * floats)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


UNET_PRESETS: dict[str, UNetConfig] = {
    # CPU tests and quick experiments; at dim 32 (m3d train --model-dim 32: 32 / 64 / 64 channels, full resolution)
    # the shipped polycrystal model, for which the `cpu` preset missed L in 3D (training_runs/README.md).
    "tiny": UNetConfig(dim=16, dim_mults=(1, 2, 2), attention=(False, False, False), num_resnet_blocks=1, heads=2,
                       head_dim=16),
    # The default of m3d train: wider, with attention at the deepest level.
    "small": UNetConfig(dim=32, dim_mults=(1, 2, 2, 4), attention=(False, False, False, True), num_resnet_blocks=1,
                        heads=4, head_dim=32),
    "base": UNetConfig(dim=64, dim_mults=(1, 2, 4, 8), attention=(False, False, True, True), num_resnet_blocks=2,
                       heads=4, head_dim=32),
    # Paper A.1: dim 128, mults 1,2,4,8, attention F,F,T,T, 2 resnet blocks, 8 heads of 64.
    # CPU-shaped (the shipped spheres and carbonate models): a 2x2 pixel-unshuffle stem, then 48 / 96 / 96 channels
    # at 1/2, 1/4, 1/8 of the resolution: 2.2x tiny's FLOPs in about tiny's seconds (benchmarks/results/cpu_speed.json).
    "cpu": UNetConfig(dim=48, dim_mults=(1, 2, 2), attention=(False, False, False), num_resnet_blocks=1, heads=2,
                      head_dim=16, stem=2),
    "paper": UNetConfig(dim=128, dim_mults=(1, 2, 4, 8), attention=(False, False, True, True), num_resnet_blocks=2,
                        heads=8, head_dim=64),
}


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps. t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def norm_silu(norm: nn.GroupNorm, x: torch.Tensor, scale: torch.Tensor | None = None,
              shift: torch.Tensor | None = None, *, fused: bool = False) -> torch.Tensor:
    """``silu(norm(x) * (1 + scale) + shift)``; x: (B, C, H, W), scale, shift: (B, C) or None. ``fused`` and no
    autograd: the compiled two-pass op (``ops.group_norm_silu``), else its PyTorch twin (the reference)."""
    op = ops.group_norm_silu if fused and not torch.is_grad_enabled() else reference.group_norm_silu
    return op(x, norm.num_groups, norm.weight, norm.bias, norm.eps, scale, shift)


def _compiled_conv(conv: nn.Conv2d, fused: bool) -> bool:
    """Whether ``conv`` (3x3, stride 1, padding 1) takes the compiled Winograd op: ``fused``, no autograd, and
    C, O >= 16 (the thin stem and output convolutions keep conv2d: their products would be mostly padding)."""
    return fused and not torch.is_grad_enabled() and conv.in_channels >= 16 and conv.out_channels >= 16


def conv3x3(conv: nn.Conv2d, h: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
    """``conv`` (3x3, stride 1, padding 1) of h: (B, C, H, W) -> (B, O, H, W); ``fused``: by Winograd
    (``ops.conv3x3``: 1/4 of the multiply-adds) where ``_compiled_conv``, equal up to rounding."""
    if not _compiled_conv(conv, fused):
        return conv(h)
    return ops.conv3x3(h, conv.weight, conv.bias, conv.padding_mode == "circular")


def upsample_conv(conv: nn.Conv2d, h: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
    """``conv`` (3x3, padding 1) of h upsampled 2x by nearest neighbour: (B, C, H, W) -> (B, O, 2H, 2W).
    ``fused``: the compiled op reads h in place (no 4x-sized input) where ``_compiled_conv``."""
    if not _compiled_conv(conv, fused):
        return conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return ops.conv3x3(h, conv.weight, conv.bias, conv.padding_mode == "circular", upsample=True)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, time embedding as scale and shift after the second norm. (B, cin, H, W) -> (B, cout, H, W).
    ``fused``: the norm-activations and convolutions through the compiled ops (``set_fused``)."""

    def __init__(self, cin: int, cout: int, time_dim: int, groups: int):
        super().__init__()
        self.fused = False
        self.norm1 = nn.GroupNorm(math.gcd(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(math.gcd(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = conv3x3(self.conv1, norm_silu(self.norm1, x, fused=self.fused), fused=self.fused)
        scale, shift = self.time(temb).chunk(2, dim=1)
        h = conv3x3(self.conv2, norm_silu(self.norm2, h, scale, shift, fused=self.fused), fused=self.fused)
        return h + self.skip(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over all pixels, residual. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, ch: int, heads: int, head_dim: int, groups: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.GroupNorm(math.gcd(groups, ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * heads * head_dim, 1)
        self.out = nn.Conv2d(heads * head_dim, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        qkv = self.qkv(self.norm(x)).view(B, 3, self.heads, self.head_dim, H * W).transpose(-1, -2)
        h = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # (B, heads, HW, head_dim)
        return x + self.out(h.transpose(-1, -2).reshape(B, self.heads * self.head_dim, H, W))


class Level(nn.Module):
    """The residual blocks (+ optional attention after each) of one resolution level."""

    def __init__(self, cins: list[int], cout: int, time_dim: int, cfg: UNetConfig, attend: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, cout, time_dim, cfg.groups) for c in cins)
        self.attns = nn.ModuleList(
            Attention(cout, cfg.heads, cfg.head_dim, cfg.groups) if attend else nn.Identity() for _ in cins
        )


class UNet(nn.Module):
    """eps_theta(x_t, t). x: (B, C, H, W) float, t: (B,) model timesteps -> eps: (B, C, H, W).
    ``fused``: the inference fusions (``set_fused``)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        self.fused = False
        time_dim = 4 * cfg.dim
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        folded = cfg.channels * cfg.stem**2  # channels after the pixel-unshuffle stem
        self.init_conv = nn.Conv2d(folded, cfg.dim, 3, padding=1)
        widths = [cfg.dim * m for m in cfg.dim_mults]
        n = cfg.num_resnet_blocks

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, prev = [cfg.dim], cfg.dim
        for i, (w, attend) in enumerate(zip(widths, cfg.attention)):
            self.down.append(Level([prev] + [w] * (n - 1), w, time_dim, cfg, attend))
            skips += [w] * n
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            if not last:
                skips.append(w)
            prev = w

        self.mid1 = ResBlock(prev, prev, time_dim, cfg.groups)
        self.mid_attn = Attention(prev, cfg.heads, cfg.head_dim, cfg.groups)
        self.mid2 = ResBlock(prev, prev, time_dim, cfg.groups)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, (w, attend) in reversed(list(enumerate(zip(widths, cfg.attention)))):
            cins = []
            for _ in range(n + 1):
                cins.append(prev + skips.pop())
                prev = w
            self.up.append(Level(cins, w, time_dim, cfg, attend))
            self.upsample.append(nn.Conv2d(w, w, 3, padding=1) if i > 0 else nn.Identity())
        self.out_norm = nn.GroupNorm(math.gcd(cfg.groups, prev), prev)
        self.out_conv = nn.Conv2d(prev, folded, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        d = self.config.divisor
        if x.shape[-1] % d or x.shape[-2] % d:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of {d} for this U-Net")
        temb = self.time_mlp(timestep_embedding(t, self.config.dim))
        s = self.config.stem
        h = self.init_conv(F.pixel_unshuffle(x, s) if s > 1 else x)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, temb))
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for level, up in zip(self.up, self.upsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), temb))
            if not isinstance(up, nn.Identity):
                h = upsample_conv(up, h, fused=self.fused)
        out = self.out_conv(norm_silu(self.out_norm, h, fused=self.fused))
        return F.pixel_shuffle(out, s) if s > 1 else out


def set_fused(model: nn.Module, fused: bool) -> None:
    """Inference fusions of ``model``'s U-Nets on (True) or off, in place: every norm-activation through the
    compiled op (``norm_silu``), the residual blocks' and upsampling 3x3 convolutions by Winograd (``conv3x3``,
    ``upsample_conv``). They act only without autograd (training and gradients always take the reference path)."""
    for m in model.modules():
        if isinstance(m, (UNet, ResBlock)):
            m.fused = fused


def set_periodic(model: nn.Module, periodic: bool) -> None:
    """Switch every 3x3 convolution to circular (periodic) or zero padding, in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.padding != (0, 0):
            m.padding_mode = "circular" if periodic else "zeros"
