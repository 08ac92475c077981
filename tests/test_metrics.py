"""S2 and lineal path: compiled == reference twin == brute force; Boolean-model oracle; API errors (DESIGN 1.4, 1.5)."""
import itertools
import math

import numpy as np
import pytest
import torch

from micro3diff import _ext, ops, reference

from micro3diff import axes, phases

from micro3diff.diffusion import sampler
from micro3diff.errors import UserError
from micro3diff.metrics import compare, correlation

compiled = pytest.mark.skipif(not _ext.has_kernel("lineal_path", "cpu"), reason="compiled lineal_path not built")
cuda = pytest.mark.skipif(not _ext.has_kernel("lineal_path", "cuda") or not torch.cuda.is_available(),
                          reason="needs a CUDA device and the CUDA lineal_path")

# (B, *spatial): 2D and 3D, non-cubic, lines longer than the 64-line blocks and 64x64 bit tiles of the CPU kernel
SHAPES = [(3, 9, 70), (2, 130, 5), (2, 5, 7, 9), (1, 6, 66, 67), (2, 70, 3, 4)]


def brute_lineal_path(x: torch.Tensor, z_max: int, periodic: bool) -> torch.Tensor:
    """Every window of z + 1 voxels along every axis: (B, ndim, z_max + 1)."""
    out = torch.zeros(x.shape[0], x.dim() - 1, z_max + 1, dtype=torch.float64)
    for a in range(x.dim() - 1):
        lines = x.movedim(a + 1, -1).bool()
        n = lines.shape[-1]
        for z in range(z_max + 1):
            starts = range(n) if periodic else range(n - z)
            hits = [lines[..., [(s + t) % n for t in range(z + 1)]].all(-1) for s in starts]
            out[:, a, z] = torch.stack(hits, -1).flatten(1).double().mean(1)
    return out


def brute_two_point(x: torch.Tensor, r_max: int, periodic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """S2 by shifted products of every lag vector: (radial (R + 1,), per axis (ndim, R + 1))."""
    x = x.double()
    shape, nd = x.shape, x.dim()
    value = {}  # distinct lag -> (a representative vector, S2)
    for r in itertools.product(range(-r_max, r_max + 1), repeat=nd):
        if periodic:
            key = tuple(ri % n for ri, n in zip(r, shape))
            if any(2 * abs(ri) > n for ri, n in zip(r, shape)) or key in value:
                continue
            value[key] = (r, (x * torch.roll(x, [-ri for ri in r], list(range(nd)))).mean().item())
        else:
            a = x[tuple(slice(max(0, -ri), n - max(0, ri)) for ri, n in zip(r, shape))]
            b = x[tuple(slice(max(0, ri), n - max(0, -ri)) for ri, n in zip(r, shape))]
            value[r] = (r, (a * b).mean().item())
    bins = [[] for _ in range(r_max + 1)]
    for r, v in value.values():
        k = round(math.sqrt(sum(ri * ri for ri in r)))
        if k <= r_max:
            bins[k].append(v)
    axes = torch.tensor([[value[tuple((k if e == d else 0) % (shape[e] if periodic else 10**9) for e in range(nd))][1]
                          for k in range(r_max + 1)] for d in range(nd)], dtype=torch.float64)
    return torch.tensor([sum(b) / len(b) for b in bins], dtype=torch.float64), axes


def overlapping_spheres(n: int, radius: float, phi: float, seed: int) -> torch.Tensor:
    """Periodic Boolean model in an n^3 box: the matrix (1) outside Poisson-placed spheres."""
    gen = torch.Generator().manual_seed(seed)
    mean_count = -math.log(phi) * n**3 / (4 / 3 * math.pi * radius**3)
    centres = torch.rand(int(torch.poisson(torch.tensor(mean_count), generator=gen)), 3, generator=gen) * n
    k = math.ceil(radius) + 1
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-k, k + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    points = centres.floor().long()[:, None] + offsets
    inside = ((points - centres[:, None]) ** 2).sum(-1) <= radius**2
    idx = points[inside] % n
    covered = torch.zeros(n, n, n, dtype=torch.bool)
    covered[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return (~covered).to(torch.uint8)


# --- lineal path ---------------------------------------------------------------------------------


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_lineal_path_reference_matches_brute_force(shape, periodic):
    for p in (0.3, 0.8, 1.0, 0.0):
        x = (torch.rand(shape) < p).to(torch.uint8)
        z_max = min(shape[1:]) - 1
        torch.testing.assert_close(reference.lineal_path(x, z_max, periodic), brute_lineal_path(x, z_max, periodic),
                                   rtol=0, atol=1e-15)


@compiled
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_lineal_path_compiled_equals_reference(shape, periodic):
    for p in (0.3, 0.6, 0.95, 1.0, 0.0):
        x = (torch.rand(shape) < p).to(torch.uint8)
        for z_max in (0, min(shape[1:]) - 1):
            got = torch.ops.micro3diff.lineal_path(x, z_max, periodic)
            assert torch.equal(got, reference.lineal_path(x, z_max, periodic))


@compiled
def test_lineal_path_nonzero_bytes_are_phase_and_opcheck():
    x = torch.randint(0, 4, (2, 6, 7, 66), dtype=torch.uint8)
    assert torch.equal(torch.ops.micro3diff.lineal_path(x, 5, True), reference.lineal_path(x, 5, True))
    for periodic in (False, True):
        torch.library.opcheck(torch.ops.micro3diff.lineal_path, (x, 5, periodic))


@compiled
def test_lineal_path_op_rejects_bad_arguments():
    x = torch.ones(2, 5, 5, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="z_max"):
        torch.ops.micro3diff.lineal_path(x, 5, False)
    with pytest.raises(RuntimeError, match="uint8"):
        torch.ops.micro3diff.lineal_path(x.float(), 2, False)


def test_dispatch_reference_mode(monkeypatch):
    x = (torch.rand(2, 9, 10, 11) < 0.5).to(torch.uint8)
    auto = ops.lineal_path(x, 4, False)
    monkeypatch.setenv("M3D_OPS", "reference")
    assert torch.equal(ops.lineal_path(x, 4, False), auto)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("periodic", [False, True])
def test_lineal_path_cuda_equals_reference(periodic):
    for shape in SHAPES + [(3, 7000, 2), (1, 64, 64, 64)]:
        x = (torch.rand(shape) < 0.7).to(torch.uint8)
        z_max = min(shape[1:]) - 1
        got = torch.ops.micro3diff.lineal_path(x.cuda(), z_max, periodic).cpu()
        assert torch.equal(got, reference.lineal_path(x, z_max, periodic))


# --- S2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", [(9, 11), (8, 8), (5, 6, 7), (6, 6, 6)])
def test_two_point_matches_brute_force(shape, periodic):
    x = (torch.rand(shape) < 0.45).to(torch.uint8)
    r_max = min(shape) // 2 if periodic else min(shape) - 1
    radial, axes = brute_two_point(x, r_max, periodic)
    got = correlation.two_point(x, r_max, periodic=periodic)
    torch.testing.assert_close(got.average, radial, rtol=0, atol=1e-14)
    torch.testing.assert_close(got.parts, axes, rtol=0, atol=1e-14)


def test_two_point_batch_equals_single_items():
    x = (torch.rand(4, 12, 13) < 0.4).to(torch.uint8)
    batch = correlation.two_point(x, 5, ndim=2)
    for i in range(4):
        single = correlation.two_point(x[i], 5)
        assert torch.equal(batch.average[i], single.average) and torch.equal(batch.parts[i], single.parts)


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("shape", [(31, 40), (9, 10, 11), (20, 20, 20)])
def test_s2_and_lineal_path_at_zero_are_phi_exactly(shape, periodic):
    x = torch.rand(shape) < 0.37
    phi = correlation.volume_fraction(x)
    s2, lp = correlation.two_point(x, periodic=periodic), correlation.lineal_path(x, periodic=periodic)
    assert s2.average[0] == phi and bool((s2.parts[:, 0] == phi).all()) and bool((lp.parts[:, 0] == phi).all())
    assert abs(lp.average[0] - phi) < 1e-15


@pytest.mark.parametrize("periodic", [False, True])
def test_overlapping_spheres_match_analytic_s2_and_lineal_path(periodic):
    # Boolean model of radius R, matrix fraction phi (DESIGN 1.5): L(z) = phi^(1 + 3z/(4R)),
    # S2(r) = phi^(1 + 3r/(4R) - r^3/(16R^3)) for r <= 2R; measured phi in the formula. 64^3, R = 4.
    radius = 4
    v = overlapping_spheres(64, radius, 0.6, seed=0)
    phi = correlation.volume_fraction(v)
    r = torch.arange(2 * radius + 1, dtype=torch.float64)
    s2_exact = phi ** (1 + 3 * r / (4 * radius) - r**3 / (16 * radius**3))
    lp_exact = phi ** (1 + 3 * r / (4 * radius))
    s2 = correlation.two_point(v, 2 * radius, periodic=periodic)
    lp = correlation.lineal_path(v, 2 * radius, periodic=periodic)
    # along axes: within 1.5 % (voxelised spheres, one sample); the radial bins average S2 over
    # |r| in [k - 0.5, k + 0.5) and so sit up to ~2.5 % above the convex S2(k)
    torch.testing.assert_close(s2.parts.mean(0), s2_exact, rtol=0.015, atol=0)
    torch.testing.assert_close(s2.average, s2_exact, rtol=0.04, atol=0)
    torch.testing.assert_close(lp.average, lp_exact, rtol=0.015, atol=0)


# --- error rate, baselines, planes ---------------------------------------------------------------


def test_error_rate():
    x = torch.rand(24, 24, 24) < 0.3
    s2 = correlation.two_point(x)
    assert float(compare.error_rate(s2.average, s2.average)) == 0.0
    assert float(compare.error_rate(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))) == pytest.approx(50.0)
    batch = compare.error_rate(torch.stack([s2.average, 2 * s2.average]), s2.average)
    torch.testing.assert_close(batch, torch.tensor([0.0, 100.0], dtype=torch.float64))
    with pytest.raises(UserError, match="different lengths"):
        compare.error_rate(torch.ones(3), torch.ones(4))
    with pytest.raises(UserError, match="zero everywhere"):
        compare.error_rate(torch.ones(3), torch.zeros(3))


def test_shuffled_baseline_and_floor():
    v = overlapping_spheres(32, 3, 0.6, seed=1)
    phi = float(correlation.volume_fraction(v))
    base = compare.shuffled_baseline(v, "two_point", 8)
    assert base.curves.shape == (1, 9) and float(base.curves[0, 0]) == pytest.approx(phi, abs=1e-12)
    torch.testing.assert_close(base.curves[0, 1:], torch.full((8,), phi**2, dtype=torch.float64), rtol=0.03, atol=0)
    floor = compare.natural_variability_floor(v, (16, 16, 16), "lineal_path", 8, n_crops=5)
    assert floor.curves.shape == (5, 9) and floor.errors.shape == (5,)
    shuffled = compare.shuffled_baseline(v, "lineal_path", 8)
    assert float(floor.errors.max()) < 0.5 * float(shuffled.errors[0])  # real crops beat a structureless shuffle
    with pytest.raises(UserError, match="cannot crop"):
        compare.natural_variability_floor(v, (40, 16, 16), "two_point", 8)


def test_planes_and_isotropy():
    image = (torch.rand(16, 16) < 0.5).to(torch.uint8)
    stack = image.expand(16, 16, 16)[None]  # every slice at fixed D (yz) is the same image: columns along D
    planes = correlation.plane_correlation(stack, "two_point", 6)
    assert planes.names == ("yz", "xz", "xy") and planes.parts.shape == (1, 3, 7)
    torch.testing.assert_close(planes.parts[0, 0], correlation.two_point(image, 6).average)
    aniso = compare.isotropy(correlation.lineal_path(stack[0], 6))
    assert set(aniso) == {"x", "y", "z"} and aniso["x"] > 50 > aniso["z"]  # columns along D = x
    iso = compare.isotropy(correlation.lineal_path(overlapping_spheres(32, 3, 0.6, seed=2), 6))
    assert max(iso.values()) < 5


def test_plane_names_match_the_sampler():
    from micro3diff.axes import plane_stack

    volume = torch.randint(0, 2, (3, 4, 5), dtype=torch.uint8)
    planes = axes.orthogonal_planes(volume[None])
    assert tuple(planes) == sampler.PLANES
    for name, slices in planes.items():  # the same slices as the sampler's plane model sees, up to a transpose
        seen = torch.as_tensor(plane_stack(volume.numpy(), name))
        assert torch.equal(slices[0], seen) or torch.equal(slices[0], seen.transpose(1, 2)), name


def test_binarize_reads_0_255_images():
    image = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8)
    assert torch.equal(phases.binarize(image), image // 255)


# --- inputs --------------------------------------------------------------------------------------


def test_inputs_thresholds_and_phases():
    labels = torch.randint(0, 3, (20, 20))
    torch.testing.assert_close(correlation.two_point(labels, 5, phase=2).average,
                               correlation.two_point((labels == 2).to(torch.uint8), 5).average)
    grey = np.where(np.random.default_rng(0).random((20, 20)) < 0.4, 200.0, 10.0)
    assert float(correlation.volume_fraction(grey, threshold="otsu")) == pytest.approx(float((grey > 100).mean()))
    assert float(correlation.volume_fraction(grey, threshold=100, phase=0)) == pytest.approx(float((grey < 100).mean()))
    assert correlation.lineal_path(torch.rand(3, 10, 10) < 0.5, ndim=2).average.shape == (3, 6)
    binary16 = np.random.default_rng(1).integers(0, 2, (10, 10)).astype(np.uint16)  # 16-bit TIFFs
    assert torch.equal(phases.binarize(binary16), torch.from_numpy(binary16.astype(np.uint8)))


@pytest.mark.parametrize("kwargs, x, match", [
    ({}, torch.rand(8, 8), "not binary"),
    ({}, torch.randint(0, 3, (8, 8)), "pass phase=K"),
    ({}, torch.zeros(0, 8), "empty"),
    ({}, torch.zeros(2, 8, 8, 8, dtype=torch.uint8), "2D image or a 3D volume"),
    ({"ndim": 3}, torch.zeros(8, 8, dtype=torch.uint8), "expected 3D"),
    ({"r_max": 8}, torch.zeros(8, 8, dtype=torch.uint8), "r_max=8 out of range"),
    ({"r_max": 5, "periodic": True}, torch.zeros(8, 8, dtype=torch.uint8), "periodic: at most"),
    ({"threshold": "otsu"}, torch.ones(8, 8), "constant"),
    ({}, torch.full((8, 8), float("nan")), "not binary"),
    ({"threshold": 0.5}, torch.full((8, 8), float("nan")), "NaN"),
    ({"threshold": 0.5, "phase": 2}, torch.rand(8, 8), "phases 0 and 1"),
])
@pytest.mark.parametrize("fn", [correlation.two_point, correlation.lineal_path])
def test_bad_inputs_raise_user_errors(fn, kwargs, x, match):
    with pytest.raises(UserError, match=match):
        fn(x, **kwargs)
