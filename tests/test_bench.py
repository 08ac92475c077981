"""benchmarks/_bench.py: interleaved timing, the rerun command and the result file's facts; cpu_speed.py's FLOP count."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

from micro3diff.diffusion.unet import UNET_PRESETS
from micro3diff.io.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import _bench  # noqa: E402


def test_interleaved_runs_alternate_and_keep_the_fastest_output():
    calls, values = [], iter(range(100))
    runs = _bench.interleaved({"a": lambda: calls.append("a") or next(values), "b": lambda: calls.append("b")},
                              {"a": 3, "b": 2})
    assert calls == ["a", "b", "a", "b", "a", "b", "a"]  # one warm-up each, then A, B, A, B, A
    assert len(runs["a"].seconds) == 3 and len(runs["b"].seconds) == 2
    assert runs["a"].output in (1, 2, 3) and runs["a"].best <= runs["a"].median


def test_interleaved_budget_stops_a_slow_function():
    runs = _bench.interleaved({"slow": lambda: sum(range(10**5))}, 50, warmup=False, budget=1e-9)
    assert len(runs["slow"].seconds) == 1


def test_write_result_records_device_command_date_versions(tmp_path):
    out = tmp_path / "r.json"
    _bench.write_result(out, {"benchmark": "x"}, "cpu", "benchmarks/x.py", ["--n", "a b"])
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "x" and doc["device"].endswith("cores") and doc["versions"]["torch"]
    assert doc["command"] == "PYTHONPATH=. python benchmarks/x.py --n 'a b'" and doc["date"]


def test_cpu_speed_counts_the_models_flops_on_both_paths():
    """The fast forward (channels_last + inference fusions) is credited with the model's FLOPs, the reference count."""
    import cpu_speed

    ref, fast = (cpu_speed.forward_gflops(UNET_PRESETS["cpu"], f, repeats=1) for f in (False, True))
    assert ref["gflop_per_image"] == fast["gflop_per_image"] > 0
    assert cpu_speed.train_speed(UNET_PRESETS["tiny"], True, repeats=1)["images_per_s"] > 0
    shipped = cpu_speed.shipped_unets()
    assert set(shipped) == {"spheres", "polycrystal", "carbonate"}
    for model, (label, unet) in shipped.items():  # each label names the architecture the model has
        assert unet == load_checkpoint(model, "cpu").model.config
        assert label.split()[0] in UNET_PRESETS


def test_unet_label_names_a_preset_at_another_width():
    tiny = UNET_PRESETS["tiny"]
    assert _bench.unet_label("tiny", tiny) == "tiny"
    assert _bench.unet_label("tiny", dataclasses.replace(tiny, dim=32)) == "tiny --model-dim 32"
    with pytest.raises(SystemExit):
        _bench.unet_label("tiny", dataclasses.replace(tiny, dim_mults=(1, 2, 4)))
