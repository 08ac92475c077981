"""Anchored reconstruction, measured against real 3D ground truth -> benchmarks/results/anchors.json (+ .png).

Cases (``--cases``), each with its shipped model (``--model CASE=PATH``: another one):

* ``spheres``: truths of the kind the ``spheres`` model was trained on (``synth.spheres``: d ~ N(15, 4),
  phi 0.2, other seeds than the training volume); free-region reference: the training volume;
* ``carbonate``: there is no real 3D carbonate, so the truth is carbonate-like: a Boolean model of
  overlapping spheres (``synth.overlapping_spheres``, the spheres are phase 1) at the micrograph's phi, with
  the radius fitted to the micrograph's S2 (least squares of the analytic Boolean S2 over r <= 16); the
  micrograph (Li et al. 2018, CC BY 4.0, ``../shared/data/li2018``, read at run time) is the free-region
  reference (isotropy assumed). The shipped model learnt the micrograph, not this truth: a mismatch case.

Per truth volume i (``--first`` .. ``--first`` + ``--count`` - 1; the truth's seed is seed + 1000 + i), with
seed + i for every sampler run:

* sections: every ``--every``-th slice along x (array axis D) anchored, the rest held out (or, with
  ``--hold-out-every K``, every slice anchored but x = K // 2 + j K: one-slice gaps); held-out slices
  scored against the truth (voxel accuracy over all held-out slices, over those between two sections, and by
  distance to the nearest section; 2D S2 / L error of the held-out slices' mean curve vs the truth's, all and
  between) for: an anchored realization; with ``--vote N`` the per-voxel majority of N anchored realizations
  (seeds seed + i, ...; the first is the realization) and ``vote_phi``, their share thresholded at the
  sections' phase fraction (``anchors.point_estimate``); linear interpolation between the sections
  (thresholded at 0.5; copies of the last section beyond it) and an unanchored volume;
* face (unless ``--no-face``): slice x = 0 anchored; continuity from the face, P(phase 1 at x = 0 and at
  x = k) and the lineal path from the face along x (P(phase 1 on x = 0..k)), k = 1, 2, 4, 8, against the
  truth and against the face pasted into the unanchored volume; the free region (x >= ``--free-from``): 3D
  S2 / L error vs the case's reference, anchored against unanchored;
* exactness: anchored voxels that differ from the input (must be 0).

Sampler levers for the sections: ``--skip-parallel`` (``Anchors``; off: all three planes, as the ablation rows
without it), ``--vf model|anchors|off`` (volume-fraction control target: the model's phi, the sections' phi,
none); the face always runs with the model's phi (one slice is too few to estimate it). A lever tried and
dropped, the ``trajectory`` anchor mode (anchors_32_trajectory.json), is in commit 01785ed.

  PYTHONPATH=. python benchmarks/anchors.py --count 6 --size 64 --preset preview --threads 1
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

import _bench
from micro3diff.anchors import Anchor, Anchors, point_estimate
from micro3diff.api import load_model
from micro3diff.diffusion.network import SamplerOptions
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import sampler_settings
from micro3diff.metrics import compare, correlation
from micro3diff.synth import generators as synth

DISTANCES = (1, 2, 4, 8)
CASES = {"spheres": "spheres", "carbonate": "carbonate"}  # case -> shipped model


def boolean_radius(image: np.ndarray, r_fit: int = 16) -> tuple[float, float]:
    """(phi, R): the phase-1 fraction of ``image`` (H, W) and the sphere radius whose 3D Boolean model at that
    phi has the 2D S2 closest to the image's (least squares over r = 0..r_fit; S2 of the covered phase is
    1 - 2q + q^(1 + 3r/4R - r^3/16R^3), q = 1 - phi, r < 2R)."""
    s2 = correlation.two_point(torch.from_numpy(image), r_fit).average.numpy()
    phi, r = float(image.mean()), np.arange(r_fit + 1)
    q = 1 - phi

    def model(radius: float) -> np.ndarray:
        k = np.where(r < 2 * radius, 1 - 3 * r / (4 * radius) + r ** 3 / (16 * radius ** 3), 0.0)
        return 1 - 2 * q + q ** (2 - k)

    radii = np.arange(1.0, 12.0, 0.05)
    return phi, float(radii[np.argmin([((model(R) - s2) ** 2).sum() for R in radii])])


def reference_curves(path: str, r3d: int) -> dict | None:
    """Free-region reference {metric: (r3d + 1,)} of a .npy image (2D, isotropy assumed) or volume; None if absent."""
    if not Path(path).is_file():
        return None
    ref = torch.from_numpy(np.load(path).astype(np.uint8))
    return {n: correlation.metric_function(n)(ref, r3d, ndim=ref.ndim, phase=1).average for n in correlation.METRICS}


def make_case(case: str, a, shape) -> tuple:
    """(truth(seed) -> Microstructure of balls (``array`` (D, H, W) uint8, phase 1 = the balls, ``centres``,
    ``radii``), facts)."""
    if case == "spheres":
        return (lambda seed: synth.spheres(shape, seed=seed)), {"truth": "synth.spheres(d ~ N(15, 4), phi 0.2)"}
    phi, radius = boolean_radius(np.load(a.carbonate).astype(np.uint8))

    def truth(seed: int) -> synth.Microstructure:
        balls = synth.overlapping_spheres(shape, radius, 1 - phi, seed=seed)
        return dataclasses.replace(balls, array=(1 - balls.array).astype(np.uint8))

    return truth, {"truth": f"1 - synth.overlapping_spheres(radius {radius:.2f}, matrix_fraction {1 - phi:.4f}): "
                            "S2-fitted to the micrograph", "radius": radius,
                   "micrograph": "../shared/data/li2018/carbonate_resized.npy (Li et al. 2018, CC BY 4.0)"}


def references(a) -> dict[str, str]:
    """Each case's free-region reference: the shipped model's training data unless ``--reference CASE=PATH``."""
    return {"spheres": "runs/reproduce/data/spheres.npy", "carbonate": a.carbonate,
            **dict(m.split("=", 1) for m in a.reference or ())}


def model_of(case: str, a) -> str:
    """The case's model: ``--model CASE=PATH`` if given, else the shipped one."""
    given = dict(m.split("=", 1) for m in a.model or ())
    return given.get(case, CASES[case])


def sample(ckpt, shape, seed: int, cfg, anchors: list[Anchor] | None, n: int, vf: list[float] | None,
           skip: bool = True) -> np.ndarray:
    """``n`` volumes (n, D, H, W) uint8 of the checkpoint, seeds seed..seed + n - 1."""
    res = sample_volume(ckpt.model, NoiseSchedule(ckpt.schedule), shape, n, preset=cfg, seed=seed,
                        options=SamplerOptions.fast("cpu"), volume_fraction=vf,
                        anchors=Anchors(anchors, shape, 1, skip) if anchors else None)
    return res.phases.numpy()


def vf_target(how: str, ckpt, anchors: list[Anchor]) -> list[float] | None:
    """The control's target: the model's phi, the anchored slices' phi, or None (off)."""
    if how == "off":
        return None
    if how == "anchors" and anchors:
        return [float(np.mean([x.labels.mean() for x in anchors]))]
    return ckpt.phase_fractions


def interpolate(truth: np.ndarray, idx: list[int]) -> np.ndarray:
    """Linear interpolation along D between the sections ``idx`` of ``truth``, thresholded at 0.5."""
    out = np.empty_like(truth)
    for a, b in zip(idx, idx[1:]):
        w = (np.arange(a, b + 1) - a)[:, None, None] / (b - a)
        out[a:b + 1] = ((1 - w) * truth[a] + w * truth[b]) > 0.5
    out[idx[-1]:] = truth[idx[-1]]
    return out


def error2d(slices: np.ndarray, truth: np.ndarray, r_max: int) -> dict[str, float]:
    """S2 / L error (eq. 24) of the mean 2D curve of ``slices`` (N, H, W) against that of ``truth``'s."""
    out = {}
    for name in correlation.METRICS:
        fn = correlation.metric_function(name)
        curve = lambda v: fn(torch.from_numpy(v), r_max, ndim=2, phase=1).average.mean(0)  # noqa: E731
        out[name] = float(compare.error_rate(curve(slices), curve(truth)))
    return out


def error3d(volume: np.ndarray, ref_curves: dict, r_max: int) -> dict[str, float]:
    fn = {n: correlation.metric_function(n) for n in correlation.METRICS}
    return {n: float(compare.error_rate(fn[n](torch.from_numpy(volume), r_max, ndim=3, phase=1).average, ref_curves[n]))
            for n in correlation.METRICS}


def continuity(volume: np.ndarray, face: np.ndarray) -> dict[str, list[float]]:
    """P(1 at the face and at x = k) and P(1 on the whole segment x = 0..k) from the face, k in DISTANCES."""
    run = face.astype(bool).copy()
    lineal, cross = [], []
    for k in range(1, max(DISTANCES) + 1):
        run &= volume[k].astype(bool)
        if k in DISTANCES:
            cross.append(float((face * volume[k]).mean()))
            lineal.append(float(run.mean()))
    return {"cross_s2": cross, "lineal_from_face": lineal}


def held_out(size: int, idx: list[int]) -> dict[str, list[int]]:
    """Held-out x: all, and those between two sections."""
    held = [x for x in range(size) if x not in idx]
    return {"all": held, "between": [x for x in held if x < idx[-1]]}


def accuracy(pred: np.ndarray, truth: np.ndarray, idx: list[int]) -> dict:
    """Held-out voxel accuracy: all, between sections, by distance to the nearest section."""
    held = held_out(truth.shape[0], idx)
    dist = {x: min(abs(x - i) for i in idx) for x in held["all"]}
    acc = {k: float((pred[v] == truth[v]).mean()) for k, v in held.items()}
    acc["by_distance"] = {d: float(np.mean([(pred[x] == truth[x]).mean() for x in held["all"] if dist[x] == d]))
                          for d in sorted(set(dist.values())) if d <= max(DISTANCES)}
    return acc


def score(pred: np.ndarray, truth: np.ndarray, idx: list[int], r2d: int) -> dict:
    """Held-out accuracy (``accuracy``) and 2D S2 / L error (all, between)."""
    held = held_out(truth.shape[0], idx)
    return {"accuracy": accuracy(pred, truth, idx),
            "error_2d": {k: error2d(pred[v], truth[v], r2d) for k, v in held.items()}}


def mean_sd(values: list[float]) -> list[float]:
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0]


def summarise(per_volume: list[dict]) -> dict:
    """Nested means +- sd over volumes of every number in the per-volume records."""
    first = per_volume[0]
    if isinstance(first, dict):
        return {k: summarise([v[k] for v in per_volume]) for k in first}
    if isinstance(first, list):
        return [summarise([v[j] for v in per_volume]) for j in range(len(first))]
    return mean_sd(per_volume)


def figure(path: Path, case: str, model: str, truth, face_vol, unanchored, sections_vol, interp, vote, idx,
           layout: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaps = held_out(truth.shape[0], idx)["between"]
    mid = max(gaps, key=lambda x: min(abs(x - i) for i in idx))  # the first held-out slice farthest from a section
    held = [truth[mid], sections_vol[mid], *([] if vote is None else [vote[mid]]), interp[mid], unanchored[mid]]
    names = ["truth", "anchored", *([] if vote is None else ["vote"]), "interpolation", "unanchored"]
    rows = [(f"held-out x={mid}\n({layout})", held, names)]
    if face_vol is not None:
        ks = (0, *DISTANCES)
        rows = [("face anchored at x=0", [face_vol[k] for k in ks], [f"x={k}" for k in ks]),
                ("unanchored", [unanchored[k] for k in ks], [f"x={k}" for k in ks]), *rows]
    fig, axes = plt.subplots(len(rows), 5, figsize=(12, 2.6 * len(rows)), squeeze=False)
    for r, (title, images, labels) in enumerate(rows):
        for c in range(5):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(labels[c], fontsize=9)
        axes[r, 0].text(-0.15, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=9)
    fig.suptitle(f"Anchored reconstruction, {case} ({model} model; yz slices at fixed x, phase 1 white)")
    fig.tight_layout()
    fig.subplots_adjust(left=0.05)  # room for the row titles (tight_layout ignores them)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sections(a) -> list[int]:
    """Anchored x: every ``--every``-th slice from 0, or with ``--hold-out-every K`` all but x = K // 2 + j K."""
    if a.hold_out_every:
        return [x for x in range(a.size) if x % a.hold_out_every != a.hold_out_every // 2]
    return list(range(0, a.size, a.every))


def layout(a) -> str:
    return f"every {a.hold_out_every}th slice held out" if a.hold_out_every else f"sections every {a.every}"


def run_case(case: str, a, cfg, t0: float) -> dict:
    ckpt = load_model(model_of(case, a))
    shape = (a.size,) * 3
    idx = sections(a)
    r2d, r3d = a.size // 2, (a.size - a.free_from) // 2
    make_truth, facts = make_case(case, a, shape)
    facts["reference"] = references(a)[case]
    ref_curves = reference_curves(facts["reference"], r3d)
    records = []
    for i in range(a.first, a.first + a.count):
        truth = make_truth(a.seed + 1000 + i).array
        seed = a.seed + i
        anchors = [Anchor("x", x, truth[x]) for x in idx]
        free = sample(ckpt, shape, seed, cfg, None, 1, vf_target(a.vf, ckpt, []))[0]
        sect_all = sample(ckpt, shape, seed, cfg, anchors, a.vote or 1, vf_target(a.vf, ckpt, anchors),
                          a.skip_parallel)
        sect, interp = sect_all[0], interpolate(truth, idx)
        vote = (sect_all.mean(0) > 0.5).astype(np.uint8) if a.vote else None
        votes = {} if vote is None else {
            "vote": vote, "vote_phi": point_estimate(torch.from_numpy(sect_all), truth[idx].mean()).numpy()}
        methods = {"anchored": sect, **votes, "interpolation": interp, "unanchored": free}
        rec = {"truth": i, "exact_mismatches": int((sect_all[:, idx] != truth[idx]).sum()),
               "sections": {m: score(v, truth, idx, r2d) for m, v in methods.items()},
               "phi": {"truth": float(truth.mean()), **{m: float(v.mean()) for m, v in methods.items()}}}
        face = None
        if not a.no_face:
            anchor = [Anchor("x", 0, truth[0])]
            face = sample(ckpt, shape, seed, cfg, anchor, 1, vf_target("model", ckpt, anchor))[0]
            rec["exact_mismatches"] += int((face[0] != truth[0]).sum())
            rec["phi"]["face"] = float(face.mean())
            pasted = free.copy()
            pasted[0] = truth[0]
            rec["face"] = {"continuity": {"truth": continuity(truth, truth[0]), "anchored": continuity(face, truth[0]),
                                          "pasted": continuity(pasted, truth[0])}}
            if ref_curves is not None:
                rec["face"]["free_region_error_3d"] = {"anchored": error3d(face[a.free_from:], ref_curves, r3d),
                                                       "unanchored": error3d(free[a.free_from:], ref_curves, r3d)}
        records.append(rec)
        acc = {m: f"{v['accuracy']['between']:.3f}" for m, v in rec["sections"].items()}
        print(f"{case} truth {i + 1 - a.first}/{a.count} (index {i}): mismatches {rec['exact_mismatches']}, held-out accuracy between "
              f"sections {acc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if i == a.first and a.figure:
            figure(a.out.with_name(f"{a.out.stem}_{case}.png"), case, model_of(case, a), truth, face, free, sect,
                   interp, vote, idx, layout(a))
    return {"model": model_of(case, a), "model_sha256": ckpt.sha256, **facts, "count": len(records),
            "summary": summarise(records), "per_volume": records}


SETUP = ("size", "every", "sections", "free_from", "r_max", "settings")  # what a run's numbers depend on


def merge(paths: list[Path], out: Path) -> None:
    """One result from several runs: cases side by side (each case records its own ``SETUP``; the top level
    keeps the keys all runs share), and more truths of a case (``--first``, same setup and model) pooled into
    one summary; each run's command, seconds and load kept."""
    import json

    runs = [json.loads(path.read_text()) for path in paths]
    cases: dict[str, dict] = {}
    for r in runs:
        setup = {k: r[k] for k in SETUP}
        for c, v in r["cases"].items():
            run = {k: r[k] for k in ("command", "seconds", "threads", "load_average_1_5_15min")}
            if c not in cases:
                cases[c] = {**v, **setup, "runs": [run]}
                continue
            have = cases[c]
            if {k: have[k] for k in SETUP} != setup:
                raise SystemExit(f"--merge: {c}: the runs differ in one of {', '.join(SETUP)}")
            if v["model_sha256"] != have["model_sha256"]:
                raise SystemExit(f"--merge: {c} was run with two different models")
            per_volume = have["per_volume"] + v["per_volume"]
            truths = [rec.get("truth") for rec in per_volume]
            if None in truths or len(set(truths)) != len(truths):
                raise SystemExit(f"--merge: {c}: the runs share a truth volume (use --first)")
            have.update(per_volume=per_volume, count=len(per_volume), summary=summarise(per_volume),
                        runs=have["runs"] + [run])
    common = {k: runs[0][k] for k in SETUP if all(r[k] == runs[0][k] for r in runs)}
    rest = {k: v for k, v in runs[0].items() if k not in ("cases", "command", "count", "seconds", *SETUP)}
    _bench.write_result(out, {**rest, **common, "count": {c: v["count"] for c, v in cases.items()},
                              "cases": cases, "merged": [str(path) for path in paths]}, "cpu", __file__)


def main(argv: list[str] | None = None) -> None:
    p = _bench.parser(__doc__, out="anchors.json")
    p.add_argument("--cases", default="spheres", help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=6, help="truth volumes per case")
    p.add_argument("--first", type=int, default=0, help="index of the first truth volume (more truths, --merge)")
    p.add_argument("--every", type=int, default=8, help="section spacing")
    p.add_argument("--hold-out-every", type=int, metavar="K",
                   help="instead of --every: anchor all slices but x = K // 2 + j K (dense sections, one-slice gaps)")
    p.add_argument("--free-from", type=int, default=16, help="first x of the free region of the face case")
    p.add_argument("--preset", default="preview")
    p.add_argument("--steps", type=int)
    p.add_argument("--harmonize", type=int)
    p.add_argument("--skip-parallel", action="store_true", help="skip the plane of the anchors (yz)")
    p.add_argument("--vf", choices=("model", "anchors", "off"), default="model",
                   help="volume-fraction control target (model: m3d sample's default)")
    p.add_argument("--vote", type=int, help="also score the per-voxel majority of N anchored realizations (odd N)")
    p.add_argument("--no-face", action="store_true", help="sections only (ablations)")
    p.add_argument("--figure", action="store_true", help="write <out>_<case>.png from the first truth")
    p.add_argument("--model", action="append", metavar="CASE=PATH",
                   help="another model for a case (repeatable), e.g. "
                        "carbonate=training_runs/carbonate_like/model.safetensors")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.add_argument("--reference", action="append", metavar="CASE=PATH",
                   help="free-region reference .npy of a case (repeatable; what its model learnt). Defaults: "
                        "spheres runs/reproduce/data/spheres.npy (reproduce_paper.py --stages data), carbonate the "
                        "micrograph; with the carbonate-like model: carbonate=runs/carbonate_like/data.npy")
    p.add_argument("--carbonate", default=str(_bench.CARBONATE), help="carbonate: the micrograph")
    p.add_argument("--smoke", action="store_true", help="tiny run (32^3, 1 volume, 2 steps) for the tests")
    p.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                   help="instead of running: the cases of these results (one setting, e.g. one case each, run side "
                        "by side) into --out")
    a = p.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.out or _bench.RESULTS / "anchors.json")
    cases = a.cases.split(",")
    if set(cases) - set(CASES) or (a.vote is not None and (a.vote < 1 or a.vote % 2 == 0)) or \
            (a.hold_out_every is not None and a.hold_out_every < 2):
        p.error(f"--cases takes {', '.join(CASES)}; --vote an odd N >= 1; --hold-out-every K >= 2")
    a.out = a.out or _bench.RESULTS / "anchors.json"
    if a.smoke:
        a.size, a.count, a.steps, a.harmonize, a.every, a.free_from = 32, 1, 2, 1, 8, 8
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = sampler_settings(a.preset, steps=a.steps, n_harmonize=a.harmonize)
    t0 = time.perf_counter()
    results = {case: run_case(case, a, cfg, t0) for case in cases}
    _bench.write_result(a.out, {
        "what": "anchored reconstruction vs 3D ground truth (benchmarks/anchors.py docstring)",
        "size": a.size, "count": a.count, "every": None if a.hold_out_every else a.every,
        "hold_out_every": a.hold_out_every, "sections": sections(a),
        "free_from": None if a.no_face else a.free_from, "distances": list(DISTANCES),
        "settings": {"preset": a.preset, "steps": cfg.steps, "n_harmonize": cfg.n_harmonize, "nfe": cfg.nfe,
                     "skip_parallel": a.skip_parallel, "volume_fraction": a.vf,
                     "vote": a.vote},
        "r_max": {"2d": a.size // 2, "3d": (a.size - a.free_from) // 2}, "seconds": time.perf_counter() - t0,
        "threads": torch.get_num_threads(), "cases": results,
    }, "cpu", __file__, argv)


if __name__ == "__main__":
    main()
