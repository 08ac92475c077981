"""Whole multi-plane sampler: fused (compiled) vs reference-twin updates, same small U-Net, seed and NFE (CPU).

    pytest benchmarks/bench_sampler.py --benchmark-enable
"""
import pytest

from _bench import random_unet
from micro3diff import _ext
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def model():
    return random_unet("small")


@pytest.mark.parametrize("ops", ["compiled", "reference"])
def test_sampler_16_preview(benchmark, monkeypatch, model, ops):
    if ops == "compiled" and not _ext.has_kernel("fused_step", "cpu"):
        pytest.skip("compiled CPU kernels not built")
    monkeypatch.setenv("M3D_OPS", ops)
    benchmark.group = "sampler 16^3, preview preset, small U-Net"
    res = benchmark.pedantic(sample_volume, args=(model, NoiseSchedule(), (16, 16, 16)),
                             kwargs=dict(preset="preview", seed=0), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(nfe=res.nfe, unet_share=res.seconds_network / res.seconds)
