"""fused_step (compiled) vs the reference twin, one rotating update of a (1, N, 1, N, N) volume, N = 64, 128.

    PYTHONPATH=. pytest benchmarks/bench_fused_step.py --benchmark-enable --benchmark-group-by=group

The fuller table (256^3, bandwidth, copy ceiling, JSON) is benchmarks/fused_step_report.py.
"""
import pytest
import torch

from fused_step_report import cases
from micro3diff import _ext

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("impl", ["fused philox", "fused noise", "fused in-place philox", "reference philox",
                                  "reference noise"])
def test_fused_step(benchmark, device, size, impl):
    if not _ext.has_kernel("fused_step", device):
        pytest.skip(f"compiled {device} kernels not built")
    fn = cases(size, torch.device(device))[impl]
    run = (lambda: (fn(), torch.cuda.synchronize())) if device == "cuda" else fn
    benchmark.group = f"{device} {size}^3"
    benchmark.extra_info["voxels"] = size**3
    benchmark(run)
