"""Fiji / ParaView-ready outputs (issue 14): ImageJ z-stacks with voxel size, .vti spacing, --format sets,
orthoslice figure, the NumPy API at the package face, licence and citation."""
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

import micro3diff
from micro3diff.cli import main
from micro3diff.errors import UserError
from micro3diff.io.arrays import read_array, read_voxel_size, write_phases
from micro3diff.io.vti import read_vti

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--steps", "1", "--harmonize", "1"]


def cli(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def imagej(path):
    with tifffile.TiffFile(path) as tif:
        return tif.imagej_metadata, tif.series[0].axes, tif.pages[0].resolution


def test_sample_writes_imagej_zstack_vti_and_npy_with_voxel_size(ckpt, tmp_path):
    res = cli("sample", ckpt, "--shape", 4, 8, 12, "--format", "npy,vti,tif", "--voxel-size", "2,0.5,0.25",
              "--unit", "nm", "-o", tmp_path, *FAST)
    assert res.exit_code == 0, res.output
    meta, axes, resolution = imagej(tmp_path / "tiny_0.tif")
    assert axes == "ZYX" and meta["slices"] == 4 and "channels" not in meta
    assert (meta["spacing"], meta["unit"], meta["min"], meta["max"]) == (2.0, "nm", 0, 255)
    assert resolution == (4.0, 2.0)  # pixels per unit along x = W, y = H
    assert read_voxel_size(tmp_path / "tiny_0.tif") == ((2.0, 0.5, 0.25), "nm")
    labels = np.load(tmp_path / "tiny_0.npy")
    assert np.array_equal(tifffile.imread(tmp_path / "tiny_0.tif"), labels * 255)
    volume, spacing, _ = read_vti(tmp_path / "tiny_0.vti")
    assert np.array_equal(volume, labels) and spacing == (2.0, 0.5, 0.25)
    side = json.loads((tmp_path / "tiny_0.json").read_text())
    assert side["voxel_size"] == [2.0, 0.5, 0.25] and side["unit"] == "nm"
    assert side["values"]["tiny_0.tif"] == {"0": 0, "255": 1} and side["values"]["tiny_0.npy"] == {"0": 0, "1": 1}
    assert Image.open(tmp_path / "tiny_0_ortho.png").size[0] >= 512


def test_format_sets_and_both_alias(ckpt, tmp_path):
    assert cli("sample", ckpt, "--format", "both", "-o", tmp_path, *FAST).exit_code == 0
    assert sorted(p.suffix for p in tmp_path.glob("tiny_0.*")) == [".json", ".npy", ".tif"]
    res = cli("sample", ckpt, "--format", "tif,png", "-o", tmp_path / "bad", *FAST)
    assert res.exit_code == 2 and "--format takes" in res.output


def test_sample_takes_the_checkpoints_voxel_size(tmp_path):
    from micro3diff.io.checkpoint import save_checkpoint
    from micro3diff.diffusion.schedule import ScheduleConfig
    from micro3diff.diffusion.unet import UNET_PRESETS, UNet

    path = tmp_path / "sized.safetensors"
    save_checkpoint(path, UNet(UNET_PRESETS["tiny"]).state_dict(), UNET_PRESETS["tiny"], ScheduleConfig(),
                    data={"image_size": 8, "channels": 1, "voxel_size": [3.0, 3.0, 3.0], "unit": "um"}, training={})
    assert cli("sample", path, "-o", tmp_path, *FAST).exit_code == 0
    assert read_voxel_size(tmp_path / "sized_0.tif") == ((3.0, 3.0, 3.0), "um")


def test_synth_uses_the_same_writer(tmp_path):
    out = tmp_path / "s.tif"
    res = cli("synth", "spheres", "--size", 16, "--diameter", 5, "--seed", 0, "--voxel-size", 1.5, "-o", out)
    assert res.exit_code == 0, res.output
    meta, axes, _ = imagej(out)
    assert axes == "ZYX" and meta["slices"] == 16 and (meta["spacing"], meta["unit"]) == (1.5, "um")
    assert set(np.unique(tifffile.imread(out))) == {0, 255} and set(np.unique(read_array(out))) == {0, 1}
    side = json.loads((tmp_path / "s.tif.json").read_text())
    assert side["values"] == {"0": 0, "255": 1} and side["voxel_size"] == [1.5, 1.5, 1.5]


def test_k_phases_keep_labels_with_a_display_range(tmp_path):
    labels = np.arange(3, dtype=np.uint8).repeat(8).reshape(2, 3, 4)
    assert write_phases(tmp_path / "k.tif", labels) == {"0": 0, "1": 1, "2": 2}
    meta, _, _ = imagej(tmp_path / "k.tif")
    assert (meta["min"], meta["max"]) == (0, 2) and np.array_equal(read_array(tmp_path / "k.tif"), labels)


def test_voxel_size_from_foreign_tiffs(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(10000, 5000), resolutionunit="CENTIMETER")
    assert read_voxel_size(tmp_path / "cm.tif") == ((1.0, 2.0, 1.0), "um")
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(4, 4), metadata={"unit": "micron"})
    assert read_voxel_size(tmp_path / "ij.tif") == ((0.25, 0.25, 0.25), "um")
    tifffile.imwrite(tmp_path / "plain.tif", image)
    assert read_voxel_size(tmp_path / "plain.tif") is None


def test_numpy_api(ckpt, tmp_path, one_thread):
    assert set(micro3diff.__all__) >= {"sample", "load_model", "list_models", "save", "evaluate"}
    assert "spheres" in micro3diff.list_models()
    model = micro3diff.load_model(ckpt)
    vols = micro3diff.sample(model, 8, n=2, seed=3, steps=1, n_harmonize=1)
    assert vols.shape == (2, 8, 8, 8) and vols.dtype == np.uint8
    assert cli("sample", ckpt, "--seed", 3, "--format", "npy", "-o", tmp_path, *FAST).exit_code == 0
    assert np.array_equal(micro3diff.sample(str(ckpt), 8, seed=3, steps=1, n_harmonize=1)[0],
                          np.load(tmp_path / "tiny_0.npy"))
    with pytest.raises(UserError, match="no training phase fractions"):
        micro3diff.sample(model, 8, volume_fraction="data", steps=1, n_harmonize=1)
    assert micro3diff.save(tmp_path / "v.tif", vols[0], voxel_size=0.5) == {"0": 0, "255": 1}
    assert np.array_equal(read_array(tmp_path / "v.tif"), vols[0])
    report = micro3diff.evaluate(vols, vols[0], n_crops=2)
    assert set(report.metrics) == {"two_point", "lineal_path"} and len(report.generated) == 2


def test_package_metadata_licence_and_citation():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["micro3diff"]
    assert (Path(micro3diff.__file__).parent / "py.typed").is_file()
    citation = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation and "family-names: Lee" in citation and "family-names: Yun" in citation
    assert "Multi-plane denoising diffusion-based dimensionality expansion" in citation


def test_training_data_records_the_tiffs_voxel_size(tmp_path):
    from micro3diff.training.data import DataConfig, load_training_images

    volume = (np.random.default_rng(0).random((8, 16, 16)) < 0.3).astype(np.uint8)
    write_phases(tmp_path / "v.tif", volume, voxel_size=0.7, unit="um")
    data = load_training_images(DataConfig(paths=(str(tmp_path / "v.tif"),), image_size=8)).checkpoint_data(None)
    assert data["voxel_size"] == (0.7, 0.7, 0.7) and data["unit"] == "um"


def test_models_command_lists_shipped_models_with_card_numbers():
    res = cli("models")
    assert res.exit_code == 0 and all(name in res.output for name in micro3diff.list_models())
    cards = json.loads(cli("models", "--json").output)
    spheres = next(c for c in cards if c["name"] == "spheres")
    assert spheres["title"].startswith("Case I") and set(spheres["errors"]) == {"S2", "L"}
    assert float(spheres["errors"]["S2"]["per_volume"]) > 0 and spheres["image_size"] > 0
    assert spheres["setting"] and spheres["volume_fraction"].startswith("0.")
