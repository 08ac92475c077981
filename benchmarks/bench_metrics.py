"""S2 and Torquato L(z) on a 64^3 / 128^3 overlapping-spheres volume: compiled op vs reference twin (CPU).

    pytest benchmarks/bench_metrics.py --benchmark-enable
"""
import pytest
import torch

from micro3diff import _ext
from micro3diff.synth import generators as synth

from micro3diff.metrics import correlation


@pytest.fixture(scope="module", params=[64, 128])
def volume(request):
    n = request.param
    return torch.from_numpy(synth.overlapping_spheres((n, n, n), radius=6, matrix_fraction=0.6, seed=0).array)


@pytest.mark.parametrize("periodic", [False, True])
def test_two_point(benchmark, volume, periodic):
    benchmark.group = f"S2 {volume.shape[0]}^3"
    benchmark(correlation.two_point, volume, periodic=periodic)


@pytest.mark.parametrize("ops", ["compiled", "reference"])
def test_lineal_path(benchmark, monkeypatch, volume, ops):
    if ops == "compiled" and not _ext.has_kernel("lineal_path", "cpu"):
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setenv("M3D_OPS", ops)
    benchmark.group = f"L(z) {volume.shape[0]}^3"
    benchmark(correlation.lineal_path, volume)
