"""Beyond the paper: one measured result per capability, written to benchmarks/results/beyond_paper.json.

    PYTHONPATH=. python benchmarks/beyond_paper.py train --minutes 9   # data + 4 tiny trainings side by side
    PYTHONPATH=. python benchmarks/beyond_paper.py measure             # sample, measure, write the JSON

train:   an anisotropic material (overlapping ellipsoids, semi-axes 12, 4, 4 along D) sliced into the three
         stacks the sampler's per-plane models see (micro3diff.axes.plane_stack), one tiny per-plane model
         each (``m3d train STACK --plane P --no-augment``); a 3-phase material (micro3diff.synth.generators.multiphase)
         with ``m3d train --phases 3 --axis all``. 32^2 crops, tiny preset, --threads 1, each run stopped
         after --minutes (its newest checkpoint is used).
measure: 1 any size: shipped ``spheres`` model, 48 x 48 x 144 volume with --max-batch, drift of S2 / L
           between the first and last of 3 blocks along the long axis vs the same for the reference.
         2 periodic: shipped ``spheres`` model, --periodic vs not: S2 periodic vs non-periodic estimator
           on the same volume, L of a 2x2x2 tiled copy vs the volume, interface contrast across the wrap.
         3 anisotropic: per-axis L(z) of per-plane samples vs the reference; ratio long / short axis (and a
           control: the yz model on every plane).
         4 multiphase: per-phase volume fractions generated vs reference.
         5 vti: the .vti written by ``m3d sample --format vti`` reads back equal to the TIFF.
Everything heavy runs through the ``m3d`` CLI (the commands are recorded in the JSON).
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np

import _bench
from micro3diff import axes
from micro3diff.io.arrays import read_array, write_array
from micro3diff.io.files import write_json
from micro3diff.io.vti import read_vti
from micro3diff.metrics import correlation, drift
from micro3diff.synth import generators as synth

ROOT = _bench.REPO / "runs" / "beyond"
TRAIN = ["--preset", "tiny", "--image-size", "32", "--lr", "1e-3", "--warmup", "50", "--save-every", "50",
         "--log-every", "10", "--threads", "1", "--seed", "0", "--no-progress"]
ANISO_AXES = (12.0, 4.0, 4.0)
MULTI = dict(diameter_mean=(10.0, 6.0), diameter_sd=(2.0, 1.0), volume_fraction=(0.2, 0.1))
COMMANDS: list[str] = []


def m3d(*args: str) -> None:
    """Run ``m3d ARGS`` (recorded in COMMANDS) with one thread."""
    COMMANDS.append(" ".join(["m3d", *map(str, args)]))
    _bench.run_m3d(*args, threads=1)


def make_data() -> dict[str, Path]:
    """Reference volumes (96^3) and the per-plane training stacks under ROOT."""
    ROOT.mkdir(parents=True, exist_ok=True)
    paths = {"aniso": ROOT / "aniso.npy", "multi": ROOT / "multiphase.npy"}
    if not paths["aniso"].exists():
        write_array(paths["aniso"], synth.ellipsoids((96, 96, 96), ANISO_AXES, 0.25, seed=1).array)
    if not paths["multi"].exists():
        write_array(paths["multi"], synth.multiphase((96, 96, 96), **MULTI, seed=1).array)
    aniso = read_array(paths["aniso"])
    for p in axes.PLANES:
        paths[p] = ROOT / f"aniso_{p}.npy"
        if not paths[p].exists():
            write_array(paths[p], axes.plane_stack(aniso, p))
    return paths


def train(minutes: float) -> None:
    """The four tiny trainings side by side, each stopped after ``minutes``."""
    paths = make_data()
    runs = [(paths[p], ["--plane", p, "--no-augment"], ROOT / f"run_{p}") for p in axes.PLANES]
    runs.append((paths["multi"], ["--phases", "3", "--axis", "all"], ROOT / "run_multi"))
    procs = []
    for data, extra, out in runs:
        cmd = ["m3d", "train", str(data), *extra, *TRAIN, "--steps", "100000", "-o", str(out)]
        COMMANDS.append(" ".join(cmd))
        log = open(out.with_suffix(".log"), "w")
        procs.append(subprocess.Popen(["timeout", str(int(minutes * 60)), "nice", "-n", "10", *_bench.M3D, *cmd[1:]],
                                      cwd=_bench.REPO, stdout=log, stderr=subprocess.STDOUT, env=_bench.m3d_env(1)))
    for p in procs:
        p.wait()
    write_json(ROOT / "train_commands.json", {"commands": COMMANDS, "minutes": minutes})


def sample(out: Path, *args: str, count: int = 1) -> list[np.ndarray]:
    """``m3d sample ARGS --count COUNT -o out --format npy`` (preview preset, seed 0) -> (D, H, W) labels per volume."""
    m3d("sample", *args, "--count", count, "--preset", "preview", "--format", "npy", "--device", "cpu", "-o", out,
        "--stem", "v")
    return [np.load(out / f"v_{i}.npy") for i in range(count)]


def seconds(out: Path) -> float:
    return json.loads((out / "v_0.json").read_text())["seconds"]


def any_size() -> dict:
    """Shipped spheres model (trained on 48^2 crops) -> 144 x 48 x 48, drift along D vs reference crops."""
    ref = synth.spheres(seed=1).array  # the shipped model's training volume (300 x 64 x 64)
    out = ROOT / "any_size"
    vol = sample(out, "spheres", "--shape", "144", "48", "48", "--max-batch", "48")[0]
    return {"shape": list(vol.shape), "max_batch": 48, "seconds": seconds(out), "n_blocks": 3,
            "volume_fraction": {"generated": float(vol.mean()), "reference": float(ref.mean())},
            "drift": drift.drift_report([vol], ref, 3, n_crops=16),
            "note": "first_last: error rate (%) of the last block's curve against the first's; reference_first_last:"
                    " the same for 16 random 144 x 48 x 48 crops of the reference (natural spread)"}


def periodic(count: int = 3) -> dict:
    """Shipped spheres model, ``count`` volumes 48^3, --periodic vs not (same seeds): seam checks (mean over volumes).

    Beside them: a periodic real structure (spheres in a 48^3 periodic box) and a non-periodic 48^3 crop of the
    reference.
    """
    def mean_seam(vols: list[np.ndarray]) -> dict:
        seams = [drift.seam_errors(v) for v in vols]
        return {k: np.mean([s[k] for s in seams], axis=0).tolist() for k in seams[0]}

    out = {}
    for name, flag in (("periodic", ["--periodic"]), ("non_periodic", [])):
        folder = ROOT / name
        vols = sample(folder, "spheres", "--size", "48", *flag, count=count)
        out[name] = {**mean_seam(vols), "seconds": seconds(folder), "volume_fraction": float(np.mean(vols))}
    out["reference_periodic_box"] = mean_seam([synth.spheres((48, 48, 48), seed=s).array for s in range(count)])
    ref = synth.spheres(seed=1).array
    out["reference_crop"] = mean_seam([ref[48 * i:48 * (i + 1), :48, :48] for i in range(count)])
    out["note"] = ("mean over volumes; per-axis lists in (D, H, W) order; see micro3diff.metrics.drift.seam_errors: "
                   "interface_contrast ~1 = no seam")
    return out


def anisotropic(z: int = 8) -> dict:
    """Per-plane models -> 2 volumes 48^3; L(z) along D (needle axis) / mean of H, W, generated vs reference.

    Control: the yz model (needle cross-sections) on every plane, which should lose the elongation.
    """
    ref = read_array(ROOT / "aniso.npy")
    models = [f"{p}={ROOT / f'run_{p}' / 'model.safetensors'}" for p in axes.PLANES]
    out = ROOT / "aniso_samples"
    vols = np.stack(sample(out, "--models", ",".join(models), "--size", "48", count=2))

    def stats(v: np.ndarray) -> dict:
        lp = correlation.axis_lineal_path(v, z, phase=1)
        return {"volume_fraction": float((v == 1).mean()), f"L{z}_per_axis_DHW": lp,
                "ratio_long_over_short": lp[0] / (0.5 * (lp[1] + lp[2]))}

    control = sample(ROOT / "aniso_control", ROOT / "run_yz" / "model.safetensors", "--size", "48")[0]
    return {"semi_axes_DHW": list(ANISO_AXES), "z": z, "reference": stats(ref), "generated": stats(vols),
            "control_yz_model_on_every_plane": stats(control),
            "seconds": seconds(out), "training_steps": {p: _steps(ROOT / f"run_{p}") for p in axes.PLANES}}


def multiphase() -> dict:
    """3-phase model -> 2 volumes 48^3; per-phase volume fractions and S2 error (report.evaluate) vs reference."""
    from micro3diff.metrics import report

    ref = read_array(ROOT / "multiphase.npy")
    out = ROOT / "multi_samples"
    vols = sample(out, ROOT / "run_multi" / "model.safetensors", "--size", "48", count=2)
    phases = {}
    for k in range(3):
        rep = report.evaluate(vols, ref, phase=k, n_crops=8)
        phases[str(k)] = {"generated_fraction": float(np.mean([(v == k).mean() for v in vols])),
                          "reference_fraction": float((ref == k).mean()),
                          **{f"{m}_error_of_mean": r.error_of_mean for m, r in rep.metrics.items()},
                          **{f"{m}_floor_mean": r.floor["errors_mean"] for m, r in rep.metrics.items()},
                          **{f"{m}_baseline": r.baseline["error"] for m, r in rep.metrics.items()}}
    return {"phases": phases, "seconds": seconds(out), "training_steps": _steps(ROOT / "run_multi")}


def vti() -> dict:
    """Same volume (spheres, 32^3, seed 0) written as .tif and .vti by m3d sample: equal on reading back."""
    out = ROOT / "vti"
    for fmt in ("tif", "vti"):
        m3d("sample", "spheres", "--size", "32", "--preset", "preview", "--format", fmt, "--device", "cpu",
            "-o", out, "--stem", "v", "--overwrite")
    tif, vol = read_array(out / "v_0.tif"), read_vti(out / "v_0.vti")[0]
    return {"identical": bool(np.array_equal(tif, vol)), "shape": list(vol.shape), "dtype": str(vol.dtype),
            "bytes": {"tif": (out / "v_0.tif").stat().st_size, "vti": (out / "v_0.vti").stat().st_size}}


def _steps(run: Path) -> int:
    return json.loads((run / "latest.json").read_text())["step"]


def measure() -> None:
    started = time.time()
    results = {"any_size": any_size(), "periodic": periodic(), "anisotropic": anisotropic(),
               "multiphase": multiphase(), "vti": vti()}
    train_cmds = ROOT / "train_commands.json"
    _bench.write_result(_bench.RESULTS / "beyond_paper.json", {
        "benchmark": "beyond_paper",
        "train_commands": json.loads(train_cmds.read_text()) if train_cmds.exists() else None,
        "commands": COMMANDS, "seconds": time.time() - started, "results": results,
    }, "cpu", __file__)


def main() -> None:
    ap = _bench.parser(__doc__)
    ap.add_argument("stage", choices=["train", "measure"])
    ap.add_argument("--minutes", type=float, default=9.0, help="train: wall-clock minutes per run")
    args = ap.parse_args()
    if args.stage == "train":
        train(args.minutes)
    else:
        measure()


if __name__ == "__main__":
    main()
