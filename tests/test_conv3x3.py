"""micro3diff::conv3x3 (Winograd F(4x4, 3x3)) against its PyTorch twin (conv2d, after a nearest 2x upsampling with
``upsample``) and in the U-Net's fused forward."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from micro3diff import _ext, ops, reference
from micro3diff.diffusion.unet import conv3x3, upsample_conv

needs_kernel = pytest.mark.skipif(not (_ext.HAS_EXT and _ext.has_kernel("conv3x3", "cpu")),
                                  reason="compiled CPU kernel not built")
OP = torch.ops.micro3diff.conv3x3 if _ext.HAS_EXT else None


def _args(n, c, o, h, w, channels_last, seed=0, loc=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) + loc
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randn(o, c, 3, 3, generator=g) / (3 * c**0.5), torch.randn(o, generator=g)


def _close(got, want):
    """Winograd rounding: a few float32 ulps of the largest output (the transforms scale by up to 8)."""
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5 * float(want.abs().max()) + 1e-6)


@needs_kernel
@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("n, c, o, h, w", [(2, 5, 3, 7, 9), (1, 16, 16, 8, 8), (3, 48, 20, 5, 12), (2, 1, 1, 1, 1),
                                           (1, 9, 17, 2, 3), (2, 24, 32, 13, 4)])
def test_op_equals_twin(n, c, o, h, w, channels_last, upsample, circular):
    x, weight, bias = _args(n, c, o, h, w, channels_last)
    got = OP(x, weight, bias, circular, upsample)
    _close(got, reference.conv3x3(x, weight, bias, circular, upsample))
    up = 2 if upsample else 1
    assert got.shape == (n, o, up * h, up * w)
    if up * h * up * w > 1 and o > 1:  # a 1 x 1 image or one channel is both formats
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_many_blocks_and_a_partial_last_one(threads):
    """More tiles than one block holds (and a last block of 1 tile), split between threads; a large mean."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        x, weight, bias = _args(37, 64, 48, 12, 20, True, seed=3, loc=50.0)
        _close(OP(x, weight, bias, False, False), reference.conv3x3(x, weight, bias, False))
    finally:
        torch.set_num_threads(before)


PLAIN_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])  # this folder only: micro3diff is the installed package
import torch
from test_conv3x3 import _args, _close
from micro3diff import reference
for n, c, o, h, w, cl, up, circ in [(2, 24, 32, 13, 4, True, False, True), (3, 48, 20, 5, 12, False, True, False),
                                    (37, 64, 48, 12, 20, True, False, False)]:
    x, weight, bias = _args(n, c, o, h, w, cl, seed=1, loc=5.0)
    _close(torch.ops.micro3diff.conv3x3(x, weight, bias, circ, up), reference.conv3x3(x, weight, bias, circ, up))
print("ok")
"""


@needs_kernel
def test_plain_loop_products_equal_twin(tmp_path):
    """M3D_CPU_GEMM=plain: the portable loops (what CPUs without AVX2 + FMA run) instead of the register kernel,
    in a fresh interpreter (the choice is made once per process; run outside the checkout, so that it imports the
    installed package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", PLAIN_CHILD, here], env=dict(os.environ, M3D_CPU_GEMM="plain"),
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@needs_kernel
def test_periodic_wraps_across_the_border():
    """A single 1 at a corner: the circular convolution spreads it over the three other corners too."""
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0
    weight, bias = torch.ones(16, 1, 3, 3), torch.zeros(16)
    got = OP(x, weight, bias, True, False)[0, 0]
    assert got[7, 7] == pytest.approx(1.0) and got[0, 7] == pytest.approx(1.0) and got[1, 1] == pytest.approx(1.0)
    assert got[3, 3] == pytest.approx(0.0, abs=1e-6)
    assert OP(x, weight, bias, False, False)[0, 0, 7, 7] == pytest.approx(0.0, abs=1e-6)


@needs_kernel
def test_opcheck():
    x, weight, bias = _args(2, 16, 16, 6, 8, True)
    torch.library.opcheck(OP, (x, weight, bias, False, True))


@needs_kernel
@pytest.mark.parametrize("bad, match", [
    (lambda x, w, b: (x[0], w, b), "x must be"),
    (lambda x, w, b: (x.double(), w, b), "x must be"),
    (lambda x, w, b: (x, w[:, :3], b), "weight must be"),
    (lambda x, w, b: (x, w[..., :2], b), "weight must be"),
    (lambda x, w, b: (x, w, b[:2]), "bias must be"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(RuntimeError, match=match):
        OP(*bad(*_args(1, 4, 5, 4, 4, False)), False, False)


def test_dispatch_falls_back_to_the_twin(monkeypatch):
    monkeypatch.setenv("M3D_OPS", "reference")
    x, weight, bias = _args(2, 4, 6, 5, 5, False)
    assert torch.equal(ops.conv3x3(x, weight, bias, True, True), reference.conv3x3(x, weight, bias, True, True))


@needs_kernel
@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_unet_convolutions_take_the_op_only_when_fused_without_autograd(padding_mode):
    torch.manual_seed(0)
    conv, thin = nn.Conv2d(16, 32, 3, padding=1, padding_mode=padding_mode), nn.Conv2d(4, 32, 3, padding=1)
    x = torch.randn(2, 16, 6, 10)
    with torch.no_grad():
        _close(conv3x3(conv, x, fused=True), conv(x))
        _close(upsample_conv(conv, x, fused=True), conv(nn.functional.interpolate(x, scale_factor=2.0)))
        assert torch.equal(conv3x3(conv, x), conv(x))
        assert torch.equal(conv3x3(thin, x[:, :4], fused=True), thin(x[:, :4]))  # thin: conv2d
    assert torch.equal(conv3x3(conv, x, fused=True), conv(x))  # autograd on: conv2d
    assert torch.equal(upsample_conv(conv, x, fused=True), conv(nn.functional.interpolate(x, scale_factor=2.0)))
