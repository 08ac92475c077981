"""The models shipped in micro3diff/models: load by name, size limit, model card, `m3d sample <name>` works."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.io.checkpoint import MODELS_DIR, load_checkpoint, shipped_models

EXPECTED = ("spheres", "polycrystal", "carbonate")
MAX_BYTES = 16 * 2**20


def test_the_three_paper_cases_are_shipped():
    assert set(EXPECTED) <= set(shipped_models())


@pytest.mark.parametrize("name", EXPECTED)
def test_loads_by_name_and_is_small(name):
    path = MODELS_DIR / f"{name}.safetensors"
    assert path.stat().st_size <= MAX_BYTES
    ckpt = load_checkpoint(name)
    assert ckpt.path == path and ckpt.data["channels"] == 1 and ckpt.data["phases"] == 2
    assert ckpt.training.get("step", 0) > 0
    mean, var = ckpt.prior  # the sampler's q(x_T): +-1 data, so var = 1 - mean^2
    assert -1 < mean[0] < 0 and var[0] == pytest.approx(1 - mean[0] ** 2)
    assert json.loads((MODELS_DIR / f"{name}.safetensors.json").read_text())["unet"] == json.loads(
        json.dumps(ckpt.describe()["unet"]))
    m = ckpt.x0_moments  # measured on training crops (m3d calibrate): at t = 0, x0-hat is the data itself
    assert m is not None and m.size == ckpt.data["image_size"] and m.t[-1] == ckpt.schedule.T - 1
    assert m.var[0][0] == pytest.approx(var[0], abs=0.06) and m.fraction[0][0] == pytest.approx(
        ckpt.phase_fractions[0], abs=0.03)


@pytest.mark.parametrize("name", EXPECTED)
def test_model_card_names_the_command(name):
    card = (MODELS_DIR / f"{name}.md").read_text()
    assert "m3d train" in card and "m3d sample" in card
    assert load_checkpoint(name).training["command"] in card  # the exact training command


@pytest.mark.parametrize("name", EXPECTED)
def test_m3d_sample_by_name(name, tmp_path):
    res = CliRunner().invoke(main, ["sample", name, "--size", "32", "--preset", "preview", "--steps", "3",
                                    "--format", "npy", "--device", "cpu", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    vol = np.load(tmp_path / f"{name}_0.npy")
    assert vol.shape == (32, 32, 32) and set(np.unique(vol)) <= {0, 1}
    side = json.loads((tmp_path / f"{name}_0.json").read_text())
    assert side["models"]["yz"]["path"].endswith(f"{name}.safetensors")
    assert side["volume_fraction"] == [pytest.approx(load_checkpoint(name).phase_fractions[0])]
    assert side["volume_fraction_rule"] == "variance+shift"


@pytest.mark.parametrize("name", EXPECTED)
def test_2d_samples_have_the_training_phase_fraction(name):
    """The 2D model alone (plain DDPM, 100 steps, no volume-fraction control): phi within 0.03 of the data's."""
    import torch

    from micro3diff.diffusion.sample2d import sample_images
    from micro3diff.diffusion.schedule import NoiseSchedule

    ck = load_checkpoint(name)
    images = sample_images(ck.model, NoiseSchedule(ck.schedule), 32, ck.data["image_size"], 100, seed=11)
    phi = (images > 0).float().mean().item()
    assert abs(phi - ck.phase_fractions[0]) <= 0.03, (phi, ck.phase_fractions)
    assert ck.schedule.kind == "linear_zsnr" and ck.schedule.prediction == "v"
    assert torch.isfinite(images).all()
