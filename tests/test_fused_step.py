"""fused_step / fused_step_ / fused_step_rotate_: compiled kernels vs the reference twin (DESIGN.md 1.3).

Compiled and reference agree bit for bit (csrc/philox.h explains why), so most checks use torch.equal.
"""
import math

import pytest
import torch
from conftest import cuda

from micro3diff import _ext, ops, reference

pytestmark = pytest.mark.skipif(not _ext.has_kernel("fused_step", "cpu"), reason="compiled CPU kernels not built")

F = torch.ops.micro3diff if _ext.HAS_EXT else None
COEF = (0.97, 0.31, 0.52)  # c_x, c_eps, c_z
SHAPES = [(1, 5, 1, 7, 9), (2, 5, 3, 7, 9), (2, 9, 1, 7, 5), (1, 33, 1, 40, 35)]  # (V, D, C, H, W), non-cubic
CUBES = [(2, 9, 3, 9, 9), (1, 17, 1, 17, 17), (1, 32, 2, 32, 32)]  # in-place rotation: one, partial, full blocks


def _inputs(shape, device="cpu"):
    g = torch.Generator().manual_seed(math.prod(shape))
    x, eps, noise = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    return x, eps, noise


def _philox(shape, seed, offset, device="cpu"):
    """The kernels' z alone: c_x = c_eps = 0, c_z = 1 gives out = z exactly."""
    zeros = torch.zeros(shape, device=device)
    return F.fused_step(zeros, zeros, 0.0, 0.0, 1.0, False, None, seed, offset)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("mode", ["noise", "philox"])
def test_matches_reference(shape, rotate, mode):
    x, eps, noise = _inputs(shape)
    kw = {"noise": noise} if mode == "noise" else {"seed": 1234, "offset": 7}
    got = F.fused_step(x, eps, *COEF, rotate, kw.get("noise"), kw.get("seed", 0), kw.get("offset", 0))
    want = reference.fused_step(x, eps, *COEF, rotate=rotate, **kw)
    assert got.shape == ((shape[0], shape[3], shape[2], shape[4], shape[1]) if rotate else shape)
    assert got.is_contiguous() and torch.equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
def test_rotation_is_the_permutation(shape):
    x, eps, _ = _inputs(shape)
    out, same = F.fused_step(x, eps, *COEF, True, None, 3, 4), F.fused_step(x, eps, *COEF, False, None, 3, 4)
    assert torch.equal(out, reference.rotate_plane(same))
    v = shape[0] - 1
    assert out[v, 2, 0, 3, 4] == same[v, 4, 0, 2, 3]  # out[v, h, c, w, d] = in[v, d, c, h, w]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["noise", "philox"])
def test_inplace_identity(shape, mode):
    x, eps, noise = _inputs(shape)
    nz = noise if mode == "noise" else None
    want = F.fused_step(x, eps, *COEF, False, nz, 5, 6)
    y = x.clone()
    assert F.fused_step_(y, eps, *COEF, nz, 5, 6) is None and torch.equal(y, want)


@pytest.mark.parametrize("shape", CUBES)
@pytest.mark.parametrize("mode", ["noise", "philox"])
def test_inplace_rotation(shape, mode):
    x, eps, noise = _inputs(shape)
    nz = noise if mode == "noise" else None
    want = F.fused_step(x, eps, *COEF, True, nz, 5, 6)
    y = x.clone()
    F.fused_step_rotate_(y, eps, *COEF, nz, 5, 6)
    assert torch.equal(y, want)


@pytest.mark.parametrize("shape", [CUBES[0], SHAPES[1]])
def test_sampler_entry_point(shape):
    """ops.fused_step_rotate: in place for cubic volumes, out of place otherwise; same values either way."""
    x, eps, _ = _inputs(shape)
    want = reference.fused_step(x, eps, *COEF, rotate=True, seed=2**64 - 3, offset=9)
    y = x.clone()
    got = ops.fused_step_rotate(y, eps, *COEF, seed=2**64 - 3, offset=9)
    assert torch.equal(got, want)
    assert (got.data_ptr() == y.data_ptr()) == (shape[1] == shape[3] == shape[4])


def test_wrappers_match_reference_mode(monkeypatch):
    x, eps, _ = _inputs(CUBES[0])
    calls = [lambda t: ops.fused_step(t, eps, *COEF, rotate=True, seed=-5, offset=2**63 + 1),
             lambda t: ops.fused_step_(t, eps, *COEF, seed=11, offset=12),
             lambda t: ops.fused_step_rotate_(t, eps, *COEF, seed=13, offset=14)]
    compiled = [f(x.clone()) for f in calls]
    monkeypatch.setenv("M3D_OPS", "reference")
    for f, c in zip(calls, compiled):
        assert torch.equal(f(x.clone()), c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rotate", [False, True])
def test_low_precision_eps(dtype, rotate):
    x, eps, _ = _inputs(SHAPES[1])
    e = eps.to(dtype)
    got = F.fused_step(x, e, *COEF, rotate, None, 1, 2)
    assert torch.equal(got, F.fused_step(x, e.float(), *COEF, rotate, None, 1, 2))
    assert torch.equal(got, reference.fused_step(x, e, *COEF, rotate=rotate, seed=1, offset=2))
    y = x.clone()
    F.fused_step_(y, e, *COEF, None, 1, 2)
    assert torch.equal(y, F.fused_step(x, e.float(), *COEF, False, None, 1, 2))


def test_noncontiguous_inputs():
    """Out of place: any strides (copied to contiguous). In place: eps/noise any strides, x must be contiguous."""
    x, eps, noise = _inputs((2, 7, 3, 9, 5))
    xs, es, ns = (t.transpose(1, 3).contiguous().transpose(1, 3) for t in (x, eps, noise))  # same values, new strides
    assert not xs.is_contiguous()
    for rotate in (False, True):
        want = F.fused_step(x, eps, *COEF, rotate, noise, 0, 0)
        assert torch.equal(F.fused_step(xs, es, *COEF, rotate, ns, 0, 0), want)
    y = x.clone()
    F.fused_step_(y, es, *COEF, ns, 0, 0)
    assert torch.equal(y, F.fused_step(x, eps, *COEF, False, noise, 0, 0))
    with pytest.raises(RuntimeError, match="fused_step_: x is updated in place and must be contiguous"):
        F.fused_step_(xs, eps, *COEF, None, 0, 0)
    cube = torch.randn(1, 6, 1, 6, 6)
    with pytest.raises(RuntimeError, match="fused_step_rotate_: x is updated in place and must be contiguous"):
        F.fused_step_rotate_(cube.transpose(3, 4), cube, *COEF, None, 0, 0)


def test_bad_arguments():
    x, eps, noise = _inputs(SHAPES[0])
    bad = [
        ((x.double(), eps), {}, "fused_step: x must be float32, got Double"),
        ((x[0], eps[0]), {}, r"x must be \(V, D, C, H, W\) with 5 dims, got 4 dims"),
        ((x, eps.int()), {}, "eps must be float32, bfloat16 or float16, got Int"),
        ((x, eps[:, :4]), {}, "eps must have x's shape"),
        ((x, eps), {"noise": noise.double()}, "noise must be float32, got Double"),
        ((x, eps), {"noise": noise[..., :5]}, "noise must have x's shape"),
        ((x, eps.to("meta")), {}, "eps must be on x's device cpu, got meta"),
        ((x, eps), {"noise": noise.to("meta")}, "noise must be on x's device cpu, got meta"),
    ]
    for (a, e), kw, msg in bad:
        with pytest.raises(RuntimeError, match=msg):
            F.fused_step(a, e, *COEF, True, kw.get("noise"), 0, 0)
    msg = r"fused_step_rotate_: in-place rotation needs D == H == W, got \(D, H, W\) = \(5, 7, 9\)"
    with pytest.raises(RuntimeError, match=msg):
        F.fused_step_rotate_(x, eps, *COEF, None, 0, 0)
    with pytest.raises(RuntimeError, match="fused_step_: eps must have x's shape"):
        F.fused_step_(x, eps[:, :, :, :3], *COEF, None, 0, 0)


def test_empty_and_threads():
    x = torch.zeros(2, 0, 1, 3, 4)
    assert F.fused_step(x, x, *COEF, True, None, 0, 0).shape == (2, 3, 1, 4, 0)
    x, eps, _ = _inputs((1, 40, 2, 33, 31))
    want = F.fused_step(x, eps, *COEF, True, None, 1, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(F.fused_step(x, eps, *COEF, True, None, 1, 1), want)
    finally:
        torch.set_num_threads(threads)


_X, _E, _N = _inputs((2, 5, 3, 7, 9))
_XC, _EC, _NC = _inputs((2, 6, 2, 6, 6))


@pytest.mark.parametrize("op, args", [
    ("fused_step", (_X, _E, *COEF, True, None, 1, 2)),
    ("fused_step", (_X, _E.bfloat16(), *COEF, False, _N, 1, 2)),
    ("fused_step_", (_X.clone(), _E, *COEF, None, 1, 2)),
    ("fused_step_", (_X.clone(), _E.half(), *COEF, _N, 1, 2)),
    ("fused_step_rotate_", (_XC.clone(), _EC, *COEF, None, 1, 2)),
    ("fused_step_rotate_", (_XC.clone(), _EC, *COEF, _NC, 1, 2)),
])
def test_opcheck(op, args):
    torch.library.opcheck(getattr(F, op).default, args)


# --- Philox ---------------------------------------------------------------------------------------


def test_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((2**32 - 1,) * 4, (2**32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        got = reference.philox4x32_10([torch.tensor([c]) for c in ctr], key)
        assert [int(w) for w in got] == list(want)


@pytest.mark.parametrize("seed, offset", [(0, 0), (42, 3), (-1, -2), (2**62 + 12345, 2**40 + 1)])
def test_cpu_philox_equals_reference(seed, offset):
    shape = (1, 3, 1, 11, 13)  # 429 elements: last group partial
    assert torch.equal(_philox(shape, seed, offset), reference.philox_normal(shape, seed, offset))


def test_philox_stream_identity():
    shape = (1, 16, 1, 32, 32)
    z = _philox(shape, 7, 1)
    assert torch.equal(z, _philox(shape, 7, 1))
    for seed, offset in ((7, 2), (8, 1), (7 + 2**32, 1), (7, 1 + 2**32)):  # every key and counter word counts
        assert (_philox(shape, seed, offset) == z).float().mean() < 1e-3
    # element i depends on i only: a prefix of a longer draw is the shorter draw
    assert torch.equal(_philox((1, 4, 1, 32, 32), 7, 1), z[:, :4])


def test_philox_moments():
    """Mean, variance, tail mass and neighbour correlations within 5 standard errors of N(0, 1) i.i.d."""
    n = 2**21
    z = _philox((1, 128, 1, 128, 128), 2024, 0).flatten().double()
    se = 5 / math.sqrt(n)
    assert abs(z.mean()) < se
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)  # Var(s^2) = 2/n for normal data
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96 / n)  # Var(z^4) = 105 - 9
    p3 = math.erfc(3 / math.sqrt(2))  # P(|z| > 3)
    assert abs((z.abs() > 3).double().mean() - p3) < 5 * math.sqrt(p3 * (1 - p3) / n)
    for lag in (1, 2, 3, 4, 5, 128):  # lanes of one group (1..3), neighbouring groups, the next row
        assert abs((z[:-lag] * z[lag:]).mean()) < se, lag
    # the (cos, sin) outputs of one Box-Muller draw are independent, not merely uncorrelated
    pairs = z.view(-1, 2).abs()
    assert abs(torch.corrcoef(pairs.T)[0, 1]) < 5 / math.sqrt(n / 2)


# --- CUDA (skipped without a device) ----------------------------------------------------------------


@cuda
@pytest.mark.parametrize("shape", SHAPES + CUBES)
@pytest.mark.parametrize("eps_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu_bits(shape, eps_dtype):
    x, eps, noise = _inputs(shape)
    eps = eps.to(eps_dtype)
    xd, ed, nd = x.cuda(), eps.cuda(), noise.cuda()
    for rotate in (False, True):
        for nz, nzd in ((None, None), (noise, nd)):
            want = F.fused_step(x, eps, *COEF, rotate, nz, 9, 10)
            assert torch.equal(F.fused_step(xd, ed, *COEF, rotate, nzd, 9, 10).cpu(), want)
    y, yd = x.clone(), xd.clone()
    F.fused_step_(y, eps, *COEF, None, 9, 10)
    F.fused_step_(yd, ed, *COEF, None, 9, 10)
    assert torch.equal(yd.cpu(), y)
    if shape[1] == shape[3] == shape[4]:
        y, yd = x.clone(), xd.clone()
        F.fused_step_rotate_(y, eps, *COEF, noise, 9, 10)
        F.fused_step_rotate_(yd, ed, *COEF, nd, 9, 10)
        assert torch.equal(yd.cpu(), y)
        F.fused_step_rotate_(yd, ed, *COEF, None, 9, 10)
        assert torch.equal(yd.cpu(), F.fused_step(y, eps, *COEF, True, None, 9, 10))


@cuda
def test_cuda_misaligned_and_opcheck():
    """Views at odd storage offsets take the scalar (non-float4) path; opcheck on CUDA tensors."""
    x, eps, noise = _inputs((1, 5, 1, 7, 9))
    buf = torch.randn(x.numel() + 1, device="cuda")
    xd = buf[1:].view(x.shape).copy_(x)
    want = F.fused_step(x, eps, *COEF, False, None, 1, 2)
    assert torch.equal(F.fused_step(xd, eps.cuda(), *COEF, False, None, 1, 2).cpu(), want)
    torch.library.opcheck(F.fused_step.default, (x.cuda(), eps.cuda(), *COEF, True, None, 1, 2))
    torch.library.opcheck(F.fused_step_rotate_.default, (_XC.cuda(), _EC.cuda(), *COEF, None, 1, 2))
