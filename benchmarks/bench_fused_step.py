"""fused_step (compiled) vs the reference twin, one rotating update of a (1, N, 1, N, N) volume, N = 64, 128.

    PYTHONPATH=. pytest benchmarks/bench_fused_step.py --benchmark-enable --benchmark-group-by=group

The fuller table (256^3, bandwidth, copy ceiling, JSON) is benchmarks/fused_step_report.py.
"""
import pytest
import torch

from micro3diff import _ext, reference

COEF = (0.97, 0.31, 0.52)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _impls(x, eps, noise):
    """name -> zero-argument callable; the in-place one rewrites x (harmless: timing only)."""
    F = torch.ops.micro3diff
    return {
        "fused philox": lambda: F.fused_step(x, eps, *COEF, True, None, 1, 2),
        "fused noise": lambda: F.fused_step(x, eps, *COEF, True, noise, 1, 2),
        "fused in-place philox": lambda: F.fused_step_rotate_(x, eps, *COEF, None, 1, 2),
        "reference philox": lambda: reference.fused_step(x, eps, *COEF, rotate=True, seed=1, offset=2),
        "reference noise": lambda: reference.fused_step(x, eps, *COEF, rotate=True, noise=noise),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("impl", ["fused philox", "fused noise", "fused in-place philox", "reference philox",
                                  "reference noise"])
def test_fused_step(benchmark, device, size, impl):
    if not _ext.has_kernel("fused_step", device):
        pytest.skip(f"compiled {device} kernels not built")
    shape = (1, size, 1, size, size)
    x, eps, noise = (torch.randn(shape, device=device) for _ in range(3))
    fn = _impls(x, eps, noise)[impl]
    run = (lambda: (fn(), torch.cuda.synchronize())) if device == "cuda" else fn
    benchmark.group = f"{device} {size}^3"
    benchmark.extra_info["voxels"] = x.numel()
    benchmark(run)
