"""The pixel-unshuffle stem of the U-Net (UNetConfig.stem): the CPU-shaped ``cpu`` preset."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from micro3diff.cli.train import train as train_command
from micro3diff.training.config import TRAIN_PRESETS
from micro3diff.diffusion.unet import UNET_PRESETS, UNet, UNetConfig


def _randomised(model: UNet) -> UNet:
    torch.manual_seed(0)
    for p in model.parameters():  # the zero-initialised output layer would make every output 0
        torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.mark.parametrize("stem", [2, 4])
def test_stem_is_unshuffle_then_the_same_network_then_shuffle(stem):
    cfg = UNetConfig(channels=1, dim=16, dim_mults=(1, 2), attention=(False, False), num_resnet_blocks=1, heads=2,
                     head_dim=8, stem=stem)
    model = _randomised(UNet(cfg)).eval()
    inner = UNet(dataclasses.replace(cfg, channels=stem**2, stem=1)).eval()
    inner.load_state_dict(model.state_dict())
    x, t = torch.randn(3, 1, 8 * stem, 4 * stem), torch.tensor([5, 500, 999])
    with torch.no_grad():
        want = F.pixel_shuffle(inner(F.pixel_unshuffle(x, stem), t), stem)
        got = model(x, t)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert want.abs().max() > 0


def test_divisor_and_sides():
    cfg = UNET_PRESETS["cpu"]
    assert cfg.stem == 2 and cfg.divisor == 8
    model = UNet(cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 24, 40), torch.tensor([1])).shape == (1, 1, 24, 40)
        with pytest.raises(ValueError, match="multiples of 8"):
            model(torch.randn(1, 1, 36, 48), torch.tensor([1]))


def test_configs_without_a_stem_load_as_before():
    d = dataclasses.asdict(UNET_PRESETS["tiny"])
    d.pop("stem")
    assert UNetConfig.from_dict(d) == UNET_PRESETS["tiny"]
    with pytest.raises(Exception, match="stem"):
        UNetConfig(stem=0)


def test_every_training_preset_is_offered_by_the_cli():
    choices = next(p for p in train_command.params if p.name == "preset").type.choices
    assert set(choices) == set(TRAIN_PRESETS)
