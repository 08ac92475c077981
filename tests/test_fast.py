"""Sampler fast path (micro3diff.diffusion.network): the reference volume where it must be; CUDA features skipped off CUDA."""
import dataclasses

import pytest
import torch
from torch import nn

from micro3diff import _ext
from micro3diff.diffusion.network import SamplerOptions
from micro3diff.diffusion.sampler import iter_sample_volume, sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import SamplerSettings
from micro3diff.diffusion.unet import UNET_PRESETS, UNet, set_fused
from micro3diff.errors import UserError

SCHEDULE = NoiseSchedule()
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_unet(channels: int = 1, attention: bool = False) -> UNet:
    cfg = dataclasses.replace(UNET_PRESETS["tiny"], channels=channels, attention=(False, False, attention))
    model = UNet(cfg)
    nn.init.normal_(model.out_conv.weight, std=0.05)
    return model.eval()


def snapshot(model: nn.Module) -> list[tuple[torch.dtype, tuple, torch.Tensor]]:
    return [(p.dtype, p.stride(), p.detach().clone()) for p in model.parameters()]


def assert_same_params(before, model):
    for (dtype, stride, value), p in zip(before, model.parameters()):
        assert p.dtype == dtype and p.stride() == stride and torch.equal(p.detach(), value)


@pytest.mark.parametrize("shape, n_vol, max_batch", [((8, 8, 8), 2, None), ((8, 4, 12), 2, 5)])
def test_fast_path_off_cuda_gives_the_reference_volume(shape, n_vol, max_batch):
    """CPU: with its features off the fast path is bit-identical (fp32); SamplerOptions.fast("cpu") (channels_last)
    changes float rounding only: phase labels differ in < 0.1 % of voxels."""
    model = tiny_unet()
    kw = dict(steps=3, n_harmonize=2, seed=3, max_batch=max_batch)
    ref = sample_volume(model, SCHEDULE, shape, n_vol, **kw)
    off = sample_volume(model, SCHEDULE, shape, n_vol, options=SamplerOptions(sync_timing=False), **kw)
    assert torch.equal(off.volume, ref.volume)
    fast_opts = SamplerOptions.fast("cpu")
    assert fast_opts.channels_last and not (fast_opts.autocast_bf16 or fast_opts.cuda_graph)
    fast = sample_volume(model, SCHEDULE, shape, n_vol, options=fast_opts, **kw)
    assert (fast.phases != ref.phases).float().mean().item() < 1e-3
    torch.testing.assert_close(fast.volume, ref.volume, rtol=0, atol=1e-4)
    assert fast.nfe == ref.nfe == 2 * 2 + 1
    assert fast.seconds >= fast.seconds_network > 0


def test_channels_last_on_cpu_close_to_reference_and_weights_restored():
    model = tiny_unet(channels=2, attention=True)
    before = snapshot(model)
    kw = dict(steps=3, n_harmonize=2, seed=1)
    ref = sample_volume(model, SCHEDULE, (8, 8, 8), **kw).volume
    opts = SamplerOptions(channels_last=True, sync_timing=False)
    seen = []
    model.init_conv.register_forward_pre_hook(lambda m, a: seen.append(m.weight.is_contiguous(
        memory_format=torch.channels_last) and not m.weight.is_contiguous()))
    out = sample_volume(model, SCHEDULE, (8, 8, 8), options=opts, **kw).volume
    assert seen and all(seen)  # the run really used channels_last weights
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)  # conv algorithm changes float rounding only
    assert_same_params(before, model)


def test_weights_restored_when_the_generator_is_closed_early():
    model = tiny_unet()
    before = snapshot(model)
    it = iter_sample_volume(model, SCHEDULE, (8, 8, 8), 1, SamplerSettings.make(
        steps=5, n_harmonize=1, options=SamplerOptions(channels_last=True)))
    next(it)
    assert model.init_conv.weight.is_contiguous(memory_format=torch.channels_last)
    it.close()
    assert_same_params(before, model)


def test_cuda_only_options_refused_off_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    for opts in (SamplerOptions(autocast_bf16=True), SamplerOptions(cuda_graph=True)):
        with pytest.raises(UserError, match="CUDA"):
            sample_volume(tiny_unet(), SCHEDULE, (8, 8, 8), steps=2, n_harmonize=1, options=opts)


@cuda
def test_cuda_fast_path_close_to_reference_and_graph_equals_eager():
    """bf16 autocast + channels_last + CUDA graph vs fp32 eager: same volume up to bf16 rounding of eps."""
    model = tiny_unet(attention=True).cuda()
    before = snapshot(model)
    kw = dict(steps=6, n_harmonize=2, seed=4, device="cuda")
    ref = sample_volume(model, SCHEDULE, (16, 16, 16), 2, **kw).volume
    fast = sample_volume(model, SCHEDULE, (16, 16, 16), 2, options=SamplerOptions.fast("cuda"), **kw)
    eager = sample_volume(model, SCHEDULE, (16, 16, 16), 2, options=dataclasses.replace(
        SamplerOptions.fast("cuda"), cuda_graph=False), **kw).volume
    err = (fast.volume - ref).norm() / ref.norm()
    assert torch.isfinite(fast.volume).all() and err < 2e-2, err
    torch.testing.assert_close(fast.volume, eager, rtol=0, atol=1e-3)  # replay computes what eager computes
    assert 0 < fast.seconds_network <= fast.seconds
    assert_same_params(before, model)


@cuda
def test_cuda_graph_non_cubic_chunked_fp32_matches_reference():
    """Graph only (fp32): replays with copied-in x (non-cubic, new x each plane) and chunked forwards."""
    model = tiny_unet().cuda()
    kw = dict(steps=4, n_harmonize=3, seed=2, device="cuda", max_batch=7)
    ref = sample_volume(model, SCHEDULE, (8, 12, 16), 2, **kw).volume
    out = sample_volume(model, SCHEDULE, (8, 12, 16), 2, options=SamplerOptions(cuda_graph=True), **kw).volume
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


def test_cli_fast_flag_on_cpu_same_volume(tmp_path):
    """``m3d sample --fast`` on CPU runs the reference computation: same volume as ``--no-fast``."""
    import json

    import numpy as np
    from click.testing import CliRunner

    from micro3diff.io.checkpoint import save_checkpoint
    from micro3diff.cli import main
    from micro3diff.diffusion.schedule import ScheduleConfig

    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, tiny_unet().state_dict(), UNET_PRESETS["tiny"], ScheduleConfig(),
                    data={"image_size": 8, "channels": 1}, training={})
    out = {}
    for flag in ("--fast", "--no-fast"):
        res = CliRunner().invoke(main, ["sample", str(ckpt), "--steps", "3", "--harmonize", "2", "--device", "cpu",
                                        "--format", "npy", "-o", str(tmp_path / flag), flag])
        assert res.exit_code == 0, res.output
        out[flag] = (np.load(tmp_path / flag / "tiny_0.npy"), json.loads((tmp_path / flag / "tiny_0.json").read_text()))
    assert np.array_equal(out["--fast"][0], out["--no-fast"][0])
    assert out["--fast"][1]["fast"]["cuda_graph"] is False and out["--no-fast"][1]["fast"] is None


@pytest.mark.skipif(not (_ext.HAS_EXT and _ext.has_kernel("conv3x3", "cpu")), reason="compiled CPU kernels not built")
def test_fused_unet_is_one_graph_for_torch_compile():
    """The fused CPU U-Net (conv3x3, group_norm_silu) traces whole: the ops' dispatch answer is a constant while
    torch.compile traces, so no op call breaks the graph (each break recompiled per op, up to dynamo's limit)."""
    model = tiny_unet().to(memory_format=torch.channels_last)
    set_fused(model, True)
    x = torch.randn(2, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x, torch.tensor([10, 900]))
    assert explained.graph_break_count == 0, explained.break_reasons
