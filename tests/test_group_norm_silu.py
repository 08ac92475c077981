"""The U-Net's inference fusions: micro3diff::group_norm_silu against its PyTorch twin, and the fused U-Net (with
micro3diff::conv3x3, tests/test_conv3x3.py) against the reference, in the U-Net and the sampler's network."""
import dataclasses

import pytest
import torch
from torch import nn

from micro3diff import _ext, ops, reference
from micro3diff.diffusion.network import SamplerOptions, network
from micro3diff.diffusion.unet import UNET_PRESETS, ResBlock, UNet, set_fused
from micro3diff.errors import UserError

needs_kernel = pytest.mark.skipif(not (_ext.HAS_EXT and _ext.has_kernel("group_norm_silu", "cpu")),
                                  reason="compiled CPU kernel not built")
OP = torch.ops.micro3diff.group_norm_silu if _ext.HAS_EXT else None


def _args(n, c, h, w, groups, film, channels_last, loc=0.0, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * spread + loc
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)
    scale = torch.randn(n, c, generator=g) if film else None
    shift = torch.randn(n, c, generator=g) if film else None
    return x, groups, weight, bias, 1e-5, scale, shift


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("film", [False, True])
@pytest.mark.parametrize("n, c, h, w, groups", [(3, 16, 8, 8, 8), (1, 48, 7, 5, 8), (2, 6, 3, 9, 1), (2, 8, 4, 4, 8),
                                                 (2, 96, 16, 16, 8)])
def test_equals_twin(n, c, h, w, groups, film, channels_last):
    args = _args(n, c, h, w, groups, film, channels_last)
    x0 = args[0].clone()
    got, want = OP(*args), reference.group_norm_silu(*args)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(args[0], x0)  # input untouched
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True])
def test_far_from_zero_mean_and_saturated_silu(channels_last):
    """Mean 1e3, sd 0.1: shifted sums in double keep the statistics exact, against the float64 twin (torch's own
    channels_last float32 group_norm is off by ~300 here). |y| ~ 1e3 saturates SiLU to y or 0 without inf/nan."""
    args = _args(2, 16, 8, 8, 4, True, channels_last, loc=1e3, spread=1e-1)
    exact = reference.group_norm_silu(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
    torch.testing.assert_close(OP(*args).double(), exact, rtol=0, atol=1e-2)  # x's own float32 rounding: ~3e-3
    x, groups, weight, bias, eps, scale, shift = _args(2, 16, 8, 8, 4, True, False)
    big = (weight * 1e3, bias * 1e3)
    got, want = OP(x, groups, *big, eps, scale, shift), reference.group_norm_silu(x, groups, *big, eps, scale, shift)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


@needs_kernel
def test_constant_channels_give_the_bias():
    """Zero variance: rstd = 1/sqrt(eps), x - mean = 0, so out = silu(bias * (1 + scale) + shift)."""
    x, groups, weight, bias, eps, scale, shift = _args(2, 8, 4, 4, 2, True, True)
    x = torch.full_like(x, 3.0)
    want = torch.nn.functional.silu(bias * (1 + scale) + shift)[:, :, None, None].expand_as(x)
    torch.testing.assert_close(OP(x, groups, weight, bias, eps, scale, shift), want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("film", [False, True])
def test_opcheck(film):
    torch.library.opcheck(OP.default, _args(2, 16, 4, 6, 8, film, True))


@needs_kernel
def test_bad_arguments():
    x, groups, weight, bias, eps, scale, shift = _args(2, 16, 4, 4, 8, True, False)
    with pytest.raises(RuntimeError, match="multiple of groups"):
        OP(x, 3, weight, bias, eps, scale, shift)
    with pytest.raises(RuntimeError, match="float32"):
        OP(x.double(), groups, weight, bias, eps, scale, shift)
    with pytest.raises(RuntimeError, match="both scale and shift"):
        OP(x, groups, weight, bias, eps, scale, None)
    with pytest.raises(RuntimeError, match=r"\(N, C\)"):
        OP(x, groups, weight, bias, eps, scale[:1], shift[:1])


def test_dispatch_falls_back_to_the_twin(monkeypatch):
    monkeypatch.setenv("M3D_OPS", "reference")
    args = _args(2, 8, 4, 4, 2, True, False)
    assert torch.equal(ops.group_norm_silu(*args), reference.group_norm_silu(*args))


def _unet() -> UNet:
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(UNET_PRESETS["cpu"])).eval()
    nn.init.normal_(model.out_conv.weight, std=0.05)  # zero-initialised: the output would be 0
    return model


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True])
def test_unet_fused_equals_reference_forward(channels_last):
    model = _unet()
    x, t = torch.randn(4, 1, 32, 32), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        want = model(x, t)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        set_fused(model, True)
        got = model(x, t)
    assert want.abs().max() > 0  # Winograd (conv3x3) rounding: a few float32 ulps of the largest activations
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_unet_under_autograd_uses_the_twin():
    """With gradients on, the fused flag is ignored: the same bits as the reference, and it trains."""
    model, x, t = _unet(), torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    want = model(x, t)
    set_fused(model, True)
    got = model(x, t)
    assert torch.equal(got, want)
    got.square().sum().backward()
    assert model.init_conv.weight.grad is not None


def test_network_sets_and_restores_the_flag():
    model = _unet()
    blocks = [m for m in model.modules() if isinstance(m, (UNet, ResBlock))]
    assert SamplerOptions.fast("cpu").fused_unet and not SamplerOptions().fused_unet
    with network({"yz": model}, SamplerOptions(fused_unet=True, sync_timing=False), 8, torch.device("cpu")):
        assert all(m.fused for m in blocks)
    assert not any(m.fused for m in blocks)
    with pytest.raises(UserError, match="CPU kernels only"):
        SamplerOptions(fused_unet=True).check(torch.device("meta"))
