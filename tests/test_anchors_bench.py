"""benchmarks/anchors.py: more truths of a case (--first) pool into one summary; the smoke run scores every method."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import anchors as bench  # noqa: E402

SETTINGS = {"size": 32, "every": 8, "free_from": 8, "settings": {"preset": "preview"}}


def run_doc(truths: list[int], values: list[float], sha: str = "abc") -> dict:
    records = [{"truth": t, "sections": {"anchored": {"accuracy": v}}} for t, v in zip(truths, values)]
    return {**SETTINGS, "count": len(records), "command": f"run {truths}", "seconds": 1.0, "threads": 1,
            "load_average_1_5_15min": [0, 0, 0],
            "cases": {"spheres": {"model": "spheres", "model_sha256": sha, "count": len(records),
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
