"""benchmarks/anchors.py: more truths of a case (--first) pool into one summary; the smoke run scores every method;
anchors_ceiling.py: the section oracle paints what the sections determine."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import anchors as bench  # noqa: E402

SETTINGS = {"size": 32, "every": 8, "sections": [0, 8, 16, 24], "free_from": 8, "r_max": {"2d": 16, "3d": 12},
            "settings": {"preset": "preview"}}


def run_doc(truths: list[int], values: list[float], sha: str = "abc", case: str = "spheres") -> dict:
    records = [{"truth": t, "sections": {"anchored": {"accuracy": v}}} for t, v in zip(truths, values)]
    return {**SETTINGS, "count": len(records), "command": f"run {truths}", "seconds": 1.0, "threads": 1,
            "load_average_1_5_15min": [0, 0, 0],
            "cases": {case: {"model": "spheres", "model_sha256": sha, "count": len(records),
                                  "summary": bench.summarise(records), "per_volume": records}}}


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_merge_pools_the_truths_of_a_case(tmp_path):
    a = write(tmp_path, "a.json", run_doc([0, 1], [0.8, 0.9]))
    b = write(tmp_path, "b.json", run_doc([2, 3], [1.0, 0.9]))
    bench.merge([a, b], tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    case = doc["cases"]["spheres"]
    assert case["count"] == 4 and doc["count"] == {"spheres": 4}
    assert [r["truth"] for r in case["per_volume"]] == [0, 1, 2, 3]
    mean, sd = case["summary"]["sections"]["anchored"]["accuracy"]
    assert mean == pytest.approx(0.9) and sd == pytest.approx(0.08165, abs=1e-4)
    assert [r["command"] for r in case["runs"]] == ["run [0, 1]", "run [2, 3]"]
    assert case["settings"] == doc["settings"] == SETTINGS["settings"]


def test_merge_puts_cases_of_other_settings_side_by_side(tmp_path):
    a = write(tmp_path, "a.json", run_doc([0, 1], [0.8, 0.9]))
    b = write(tmp_path, "b.json", {**run_doc([0], [0.7], case="carbonate"), "settings": {"preset": "fast"}})
    bench.merge([a, b], tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    assert "settings" not in doc and doc["size"] == 32 and doc["count"] == {"spheres": 2, "carbonate": 1}
    assert doc["cases"]["spheres"]["settings"] == {"preset": "preview"}
    assert doc["cases"]["carbonate"]["settings"] == {"preset": "fast"}


@pytest.mark.parametrize("second, match", [(run_doc([1, 2], [0.9, 0.9]), "share a truth"),
                                           (run_doc([2, 3], [0.9, 0.9], sha="def"), "two different models"),
                                           ({**run_doc([2, 3], [0.9, 0.9]), "every": 4}, "differ")])
def test_merge_refuses_runs_that_do_not_pool(tmp_path, second, match):
    a = write(tmp_path, "a.json", run_doc([0, 1], [0.8, 0.9]))
    with pytest.raises(SystemExit, match=match):
        bench.merge([a, write(tmp_path, "b.json", second)], tmp_path / "m.json")


def test_smoke_run_holds_the_anchors_and_scores_every_method(tmp_path):
    out = tmp_path / "a.json"
    bench.main(["--smoke", "--cases", "spheres", "--vote", "3", "--first", "2", "--out", str(out),
                "--reference", f"spheres={tmp_path / 'absent.npy'}"])
    case = json.loads(out.read_text())["cases"]["spheres"]
    assert case["count"] == 1 and case["per_volume"][0]["truth"] == 2
    assert case["summary"]["exact_mismatches"] == [0.0, 0.0]
    methods = case["summary"]["sections"]
    assert set(methods) == {"anchored", "vote", "vote_phi", "interpolation", "unanchored"}
    assert all(0 < m["accuracy"]["all"][0] <= 1 for m in methods.values())
    assert "free_region_error_3d" not in case["per_volume"][0]["face"]  # no reference, no free-region row


def test_hold_out_every_anchors_all_but_one_slice_in_k(tmp_path):
    out = tmp_path / "h.json"
    bench.main(["--smoke", "--cases", "spheres", "--hold-out-every", "8", "--no-face", "--figure", "--out", str(out)])
    doc = json.loads(out.read_text())
    held = [x for x in range(32) if x not in doc["sections"]]
    assert held == [4, 12, 20, 28] and doc["every"] is None and doc["hold_out_every"] == 8
    case = doc["cases"]["spheres"]
    assert case["summary"]["exact_mismatches"] == [0.0, 0.0]
    assert set(case["summary"]["sections"]["interpolation"]["accuracy"]["by_distance"]) == {"1"}
    assert (tmp_path / "h_spheres.png").is_file()


def balls_of(centres: list[list[float]], radii: list[float], size: int = 32):
    from micro3diff.synth.generators import Microstructure
    from anchors_ceiling import ball

    shape = (size,) * 3
    array = np.zeros(size ** 3, np.uint8)
    for c, r in zip(centres, radii):
        array[ball(np.array(c, float), r, shape)] = 1
    return Microstructure(array.reshape(shape), np.array(centres, float), np.array(radii, float))


@pytest.mark.parametrize("centre, radius, counts, exact", [
    ([8.0, 16, 16], 3.0, {"cut": 1, "ambiguous": 1, "invisible": 0}, True),    # symmetric about its section
    ([12.0, 16, 16], 5.0, {"cut": 1, "ambiguous": 0, "invisible": 0}, True),   # cut by x = 8 and 16: side known
    ([10.5, 16, 16], 3.0, {"cut": 1, "ambiguous": 1, "invisible": 0}, False),  # one cut, mirror fits: x = 8 only
    ([4.0, 16, 16], 2.0, {"cut": 0, "ambiguous": 0, "invisible": 1}, False),   # between sections: unseen
])
def test_section_oracle_paints_what_the_sections_determine(centre, radius, counts, exact):
    from anchors_ceiling import section_oracle

    balls = balls_of([centre], [radius])
    est, got = section_oracle(balls, [0, 8, 16, 24])
    assert got == counts
    assert (est <= balls.array).all()  # never paints a voxel the ball does not cover
    assert (est == balls.array).all() == exact
    if not exact and counts["cut"]:
        assert est[8].sum() == balls.array[8].sum() and est.sum() == est[8].sum()
