"""One plane-name rule end to end: the per-plane numbers of ``m3d evaluate`` are those of the slices that the model
named for that plane in ``m3d sample --models yz=A,xz=B,xy=C`` denoised."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from micro3diff.cli import main
from micro3diff.diffusion import unet
from micro3diff.diffusion.schedule import ScheduleConfig
from micro3diff.io.checkpoint import save_checkpoint
from micro3diff.metrics import compare, correlation

SHAPE = (8, 12, 16)  # distinct sides: the image shape a model is called on names the axis its slices are cut across


def checkpoint(path, seed):
    torch.manual_seed(seed)
    model = unet.UNet(unet.UNET_PRESETS["tiny"])
    torch.nn.init.normal_(model.out_conv.weight, std=0.05)  # eps depends on the image
    save_checkpoint(path, model.state_dict(), unet.UNET_PRESETS["tiny"], ScheduleConfig(),
                    data={"image_size": 8, "channels": 1}, training={})
    return model.out_conv.weight[0, 0, 0, 0].item()  # the mark of this checkpoint's model


def test_evaluate_names_planes_as_sample_models_did(tmp_path, monkeypatch, one_thread):
    planes = ("yz", "xz", "xy")
    marks = {checkpoint(tmp_path / f"{p}.safetensors", seed): p for seed, p in enumerate(planes)}
    seen: dict[str, set] = {p: set() for p in planes}
    forward = unet.UNet.forward

    def spy(self, x, t, *args, **kwargs):
        seen[marks[self.out_conv.weight[0, 0, 0, 0].item()]].add(tuple(x.shape[-2:]))
        return forward(self, x, t, *args, **kwargs)

    monkeypatch.setattr(unet.UNet, "forward", spy)
    models = ",".join(f"{p}={tmp_path / p}.safetensors" for p in planes)
    res = CliRunner().invoke(main, ["sample", "--models", models, "--shape", *map(str, SHAPE), "--steps", "3",
                                    "--harmonize", "1", "--format", "npy", "--stem", "v", "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "v_0.json").read_text())
    assert {p: side["models"][p]["path"] for p in planes} == {p: f"{tmp_path / p}.safetensors" for p in planes}

    reference = (np.random.default_rng(0).random((40, 40)) < 0.4).astype(np.uint8)
    np.save(tmp_path / "ref.npy", reference)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "v_0.npy"), "--reference", str(tmp_path / "ref.npy"),
                                    "--mode", "2d", "--crops", "2", "-o", str(tmp_path / "report"), "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "report/report.json").read_text())

    volume = torch.from_numpy(np.load(tmp_path / "v_0.npy"))
    for name in correlation.METRICS:
        fn, r_max = correlation.metric_function(name), report["r_max"]
        ref_curve = fn(torch.from_numpy(reference), r_max).average
        errors = {}
        for plane in planes:
            (image,) = seen[plane]  # each model saw images of one shape: slices across the one axis not in it
            axis = next(a for a, n in enumerate(SHAPE) if n not in image)
            slices = volume.movedim(axis, 0)
            curve = fn(slices, r_max, ndim=2).average.mean(dim=0)
            errors[plane] = float(compare.error_rate(curve, ref_curve))
        assert len(set(errors.values())) == 3  # the planes' numbers differ, so a swapped label would show
        assert report["metrics"][name]["part_errors"] == pytest.approx(errors, rel=1e-9), name
