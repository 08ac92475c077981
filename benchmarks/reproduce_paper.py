"""Reproduce the paper's cases I, II and IV (Lee & Yun, Micro3Diff, Fig. 8) end to end, resumably.

    PYTHONPATH=. python benchmarks/reproduce_paper.py                      # every stage, every case
    PYTHONPATH=. python benchmarks/reproduce_paper.py --cases spheres --stages sample,evaluate,table

Stages (each skips work already done, so an interrupted run is continued by running it again):

  data      make the training data: case I a 300x64x64 spheres volume (d ~ N(15, 4)), case II 300
            polycrystal images 64x64 (grain sizes 6/9/12), case IV the carbonate micrograph (Li et al.
            2018, CC BY 4.0), read from --carbonate at run time, never copied.
  train     `m3d train` with the settings of CASES (resumed with --resume when the run exists).
  ship      write the run's EMA weights as fp16 to micro3diff/models/<case>.safetensors (+ .json); only
            when the shipped file is missing or --reship is given.
  sample    `m3d sample <model> --count N --size S --preset P` (finished volumes are skipped).
  evaluate  paper 3.5 protocol (micro3diff.metrics.protocol): 3D S2 and L against the 3D spheres volume
            (case I); 2D S2 and L on the three orthogonal planes against the 2D training images (cases II
            and IV); natural-variability floor and shuffled baseline beside every number.
  table     benchmarks/results/paper_cases.json + .md from every evaluated case.
  figures   docs/figures/<case>_ortho.png: a training image beside the central yz / xz / xy slices of a
            generated volume.
  cards     micro3diff/models/<case>.md: the model card (data, command, steps, seconds, U-Net, error rates).

Everything is written under --root (default runs/reproduce, ignored by git) except the table, the figures
and the shipped models.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import time
from pathlib import Path

import numpy as np
import torch

import _bench
from _bench import REPO, RESULTS
from _cards import paper_cases_lines, write_card
from _cases import CASES, calibrate_command, data_path, reference_images, train_command, train_steps
from micro3diff.io.files import provenance, write_json
from micro3diff.metrics import correlation, protocol
from micro3diff.phases import binarize

FIGURES = REPO / "docs" / "figures"
MODELS = REPO / "micro3diff" / "models"

def m3d(*args: str, threads: int | None = None) -> None:
    """Run the m3d CLI (this checkout) in a subprocess, echoing the command; raise if it fails."""
    print("+ m3d " + shlex.join(args), flush=True)
    _bench.run_m3d(*args, threads=threads)


# ------------------------------------------------------------------------------------------------ stages

def stage_data(case: str, a) -> None:
    path = data_path(case, a)
    if CASES[case]["synth"] is None:
        if not path.is_file():
            raise SystemExit(f"{case}: {path} not found (download the carbonate image of Li et al. 2018, see "
                             f"../shared/data/li2018/README.md, and pass --carbonate)")
        return
    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    m3d("synth", *CASES[case]["synth"], "-o", str(path))


def stage_train(case: str, a) -> None:
    run = Path(a.root) / case / "train"
    if (run / "latest.json").is_file():
        m3d("train", "--resume", "-o", str(run), "--steps", str(train_steps(case)), "--device", "cpu",
            "--no-progress", threads=a.threads)
    else:
        m3d(*train_command(case, a), threads=a.threads)


def _train_record(run: Path) -> dict:
    """Step and wall seconds of a run's newest checkpoint (from latest.json and log.csv)."""
    import csv

    step = json.loads((run / "latest.json").read_text())["step"]
    rows = list(csv.DictReader(open(run / "log.csv")))
    seconds = max((float(r["elapsed_s"]) for r in rows if int(r["step"]) <= step), default=float("nan"))
    # elapsed_s restarts at 0 when a run is resumed: add the segments
    total, last = 0.0, 0.0
    for r in rows:
        if int(r["step"]) > step:
            break
        e = float(r["elapsed_s"])
        if e < last:
            total += last
        last = e
    return {"step": step, "seconds": total + last if rows else seconds}


def stage_ship(case: str, a) -> None:
    from safetensors.torch import load_file

    from micro3diff.io.checkpoint import read_config, save_checkpoint
    from micro3diff.diffusion.schedule import ScheduleConfig
    from micro3diff.diffusion.unet import UNetConfig

    target = MODELS / f"{case}.safetensors"
    if target.is_file() and not a.reship:
        return
    run = Path(a.root) / case / "train"
    cfg = read_config(run / "model.safetensors")
    rec = _train_record(run)
    training = {**cfg["training"], "step": rec["step"], "steps": rec["step"], "train_seconds": round(rec["seconds"]),
                "device": f"CPU ({_bench.device_label()}, shared with other jobs)",
                "command": "m3d " + shlex.join(train_command(case, a)), "weights_dtype": "float16"}
    data = {**cfg["data"], "source": [Path(s).name for s in cfg["data"].get("source", [])]}
    if "x_mean" not in data:  # runs trained before checkpoints recorded the data moments (the sampler's prior)
        from micro3diff.training.data import load_training_images
        from micro3diff.training.config import TrainConfig

        config = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train"])
        data.update(load_training_images(config.data).moments())
    save_checkpoint(target, load_file(str(run / "model.safetensors")), UNetConfig.from_dict(cfg["unet"]),
                    ScheduleConfig(**cfg["schedule"]), data, training, dtype=torch.float16)
    _bench.run_m3d(*calibrate_command(case, a))  # the final weights' x0-hat moments, into the shipped file
    for p in (target, Path(f"{target}.json")):
        p.chmod(0o644)
    print(f"shipped {target} ({target.stat().st_size / 2**20:.2f} MiB, step {rec['step']})", flush=True)


def model_for(case: str, a) -> str:
    return case if a.model_source == "shipped" else str(Path(a.root) / case / "train" / "model.safetensors")


def sampler_args(a) -> list[str]:
    args = ["--size", str(a.size), "--count", str(a.count), "--preset", a.preset, "--seed", str(a.seed)]
    if a.steps:
        args += ["--steps", str(a.steps)]
    if a.harmonize:
        args += ["--harmonize", str(a.harmonize)]
    if a.method:
        args += ["--method", a.method]
    return args + ["--prior", a.prior]


def setting(a) -> str:
    """Name of the sampler setting: the preset plus any overrides, e.g. ``preview`` or ``preview-ddim-dataprior``."""
    return "-".join([a.preset] + ([f"s{a.steps}"] if a.steps else []) + ([f"h{a.harmonize}"] if a.harmonize else [])
                    + ([a.method] if a.method else []) + (["dataprior"] if a.prior == "data" else []))


def samples_dir(case: str, a) -> Path:
    return Path(a.root) / case / f"samples_{setting(a)}"


def evaluation_path(case: str, a) -> Path:
    return Path(a.root) / case / f"evaluation_{setting(a)}.json"


def stage_sample(case: str, a) -> None:
    m3d("sample", model_for(case, a), *sampler_args(a), "--device", "cpu", "--format", "npy",
        "-o", str(samples_dir(case, a)), "--stem", case, threads=a.threads)


def sample_files(case: str, a) -> list[Path]:
    folder = samples_dir(case, a)
    return [folder / f"{case}_{i}.npy" for i in range(a.count) if (folder / f"{case}_{i}.json").is_file()]


def stage_evaluate(case: str, a) -> None:
    files = sample_files(case, a)
    if not files:
        raise SystemExit(f"{case}: no sampled volumes under {Path(a.root) / case / 'samples'}; run the sample stage")
    vols = torch.stack([binarize(np.load(f)) for f in files])
    ref = reference_images(case, a)
    r_max = min(vols.shape[1:]) // 2
    mode = CASES[case]["mode"]
    sidecars = [json.loads(f.with_suffix(".json").read_text()) for f in files]
    out = {"case": case, "title": CASES[case]["title"], "mode": mode, "r_max": r_max, "volumes": len(files),
           "volume_shape": list(vols.shape[1:]), "reference_shape": list(ref.shape),
           "phi_reference": float(ref.double().mean()), "phi_generated": protocol.summary(vols.flatten(1).double().mean(1)),
           "sample_seconds": protocol.summary(torch.tensor([s["seconds"] for s in sidecars])),
           "sampler": {k: sidecars[0][k] for k in ("preset", "steps", "n_harmonize", "method", "eta", "nfe")},
           "model": {k: sidecars[0]["models"]["yz"][k] for k in ("path", "sha256", "unet", "training")},
           "metrics": {}}
    for name in correlation.METRICS:
        ev = (protocol.evaluate_3d(ref, vols, name, r_max, crops=a.crops, seed=a.seed) if mode == "3d" else
              protocol.evaluate_planes(ref, vols, name, r_max, crops=a.crops, floor_repeats=a.floor_repeats,
                                       seed=a.seed))
        out["metrics"][name] = {"paper": CASES[case]["paper"][name], **ev}
    out["setting"] = setting(a)
    out["command"] = _bench.command(__file__)
    out["threads"] = a.threads
    write_json(evaluation_path(case, a), out)
    print(f"{case}: " + ", ".join(f"{correlation.LABELS[n]} {m['error_per_volume']['mean']:.2f} % (floor "
                                   f"{m['floor_volume']['mean']:.2f}, shuffled {m['shuffled']:.1f})"
                                   for n, m in out["metrics"].items()), flush=True)


def stage_table(cases: list[str], a) -> None:
    """Every evaluated (case, sampler setting) under --root, one row per metric."""
    evals = [json.loads(p.read_text()) for c in cases
             for p in sorted((Path(a.root) / c).glob("evaluation_*.json"))]
    if not evals:
        raise SystemExit("no evaluated case; run the evaluate stage")
    command = _bench.command(__file__)
    device = f"CPU ({_bench.device_label()}, shared with other jobs), torch {torch.__version__}"
    table = {"command": command, "date": datetime.date.today().isoformat(), "device": device,
             "provenance": provenance(),
             "results": [{k: v for k, v in e.items()} for e in evals]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "paper_cases.json", table)

    lines = paper_cases_lines(evals, command, table["date"], device)
    (RESULTS / "paper_cases.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "paper_cases.md").read_text())


def stage_figures(case: str, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sample_files(case, a)
    if not files:
        return
    vol = np.load(files[0])
    ref = reference_images(case, a).numpy()
    S = vol.shape[0]
    real = ref[S // 2, :, :S] if CASES[case]["mode"] == "3d" else ref[0, :S, :S]
    panels = [("generated yz", vol[:, :, S // 2]), ("generated xz", vol[:, S // 2, :]), ("generated xy", vol[S // 2])]
    if CASES[case]["synth"] is not None:  # third-party data (carbonate) is never copied, not even as a figure crop
        panels.insert(0, ("training data", real))
    fig, axes = plt.subplots(1, len(panels), figsize=(2 * len(panels), 2.3), dpi=80)
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{case}: {S}^3 volume from the shipped model", fontsize=9)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / f"{case}_ortho.png")
    plt.close(fig)
    print(f"wrote {FIGURES / f'{case}_ortho.png'}", flush=True)


STAGES = ("data", "train", "ship", "sample", "evaluate", "table", "figures", "cards")


def main() -> None:
    p = _bench.parser(__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated: " + ", ".join(STAGES))
    p.add_argument("--root", default="runs/reproduce", help="work folder (data, runs, samples), relative to the repo")
    p.add_argument("--carbonate", default=str(_bench.CARBONATE), help="the 256x256 carbonate micrograph (.npy)")
    p.add_argument("--model-source", choices=["shipped", "run"], default="shipped",
                   help="sample the shipped model by name, or the run's newest checkpoint")
    p.add_argument("--reship", action="store_true", help="ship stage: overwrite micro3diff/models/<case>")
    p.add_argument("--count", type=int, default=25, help="volumes per case (paper: 25)")
    p.add_argument("--size", type=int, default=64, help="volume side")
    p.add_argument("--preset", default="preview", help="sampler preset (paper: T=1000, n_h=10)")
    p.add_argument("--steps", type=int, help="override the preset's steps")
    p.add_argument("--harmonize", type=int, help="override the preset's n_h")
    p.add_argument("--method", choices=["ddpm", "ddim"], help="override the preset's method")
    p.add_argument("--seed", type=int, default=1000, help="volume i uses seed + i; also crops and shuffles")
    p.add_argument("--crops", type=int, default=64, help="real crops/images for the single-image floor")
    p.add_argument("--floor-repeats", type=int, default=16, help="volume-sized draws for the 2D floor")
    p.add_argument("--prior", choices=["data", "standard"], default="standard",
                   help="x_T: q(x_T) from the training data's phase fractions, or N(0, I) (m3d sample --prior)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for train/sample subprocesses")
    a = p.parse_args()
    os.chdir(REPO)  # relative paths (root, recorded commands) are relative to the repository
    cases = [c for c in a.cases.split(",") if c]
    stages = [s for s in a.stages.split(",") if s]
    for bad in [c for c in cases if c not in CASES] + [s for s in stages if s not in STAGES]:
        raise SystemExit(f"unknown case or stage {bad!r}")
    funcs = {"data": stage_data, "train": stage_train, "ship": stage_ship, "sample": stage_sample,
             "evaluate": stage_evaluate, "figures": stage_figures,
             "cards": lambda case, a: write_card(case, a)}
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        if stage == "table":
            stage_table(cases, a)
        else:
            for case in cases:
                funcs[stage](case, a)
        print(f"[{stage}] {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
