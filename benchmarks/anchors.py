"""Anchored reconstruction, measured against real 3D ground truth -> benchmarks/results/anchors.json (+ .png).

Truth: synthetic 3D volumes of the kind the ``spheres`` model was trained on (``synth.spheres``: d ~ N(15, 4),
phi 0.2, other seeds than the training volume). Per truth volume i, with seed + i for every sampler run:

* sections: every ``--every``-th slice along x (array axis D) anchored, the rest held out; held-out slices
  scored against the truth (voxel accuracy, overall and by distance to the nearest section; 2D S2 / L error
  of the held-out slices' mean curve vs the truth's) beside two baselines: linear interpolation between the
  sections (thresholded at 0.5; copies of the last section beyond it) and an unanchored volume;
* face: slice x = 0 anchored; continuity from the face, P(phase 1 at x = 0 and at x = k) and the lineal
  path from the face along x (P(phase 1 on x = 0..k)), k = 1, 2, 4, 8, against the truth and against the face
  pasted into the unanchored volume; the free region (x >= ``--free-from``): 3D S2 / L error vs the training
  reference, anchored against unanchored;
* exactness: anchored voxels that differ from the input (must be 0).

  PYTHONPATH=. python benchmarks/anchors.py --count 6 --size 64 --preset preview --threads 1
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import _bench
from micro3diff.anchors import Anchor, Anchors
from micro3diff.api import load_model
from micro3diff.diffusion.network import SamplerOptions
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import sampler_settings
from micro3diff.metrics import compare, correlation
from micro3diff.synth import generators as synth

DISTANCES = (1, 2, 4, 8)


def sample(ckpt, shape, seed: int, cfg, anchors: list[Anchor] | None) -> np.ndarray:
    """One volume (D, H, W) uint8 of the checkpoint, volume-fraction control on (``m3d sample``'s default)."""
    res = sample_volume(ckpt.model, NoiseSchedule(ckpt.schedule), shape, 1, preset=cfg, seed=seed,
                        options=SamplerOptions.fast("cpu"), volume_fraction=ckpt.phase_fractions,
                        anchors=Anchors(anchors, shape, 1) if anchors else None)
    return res.phases[0].numpy()


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


def accuracy_by_distance(pred: np.ndarray, truth: np.ndarray, idx: list[int]) -> dict:
    held = [x for x in range(truth.shape[0]) if x not in idx]
    dist = {x: min(abs(x - i) for i in idx) for x in held}
    acc = {d: float(np.mean([(pred[x] == truth[x]).mean() for x in held if dist[x] == d]))
           for d in sorted(set(dist.values())) if d <= max(DISTANCES)}
    return {"all": float((pred[held] == truth[held]).mean()), "by_distance": acc}


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


def figure(path: Path, truth, face_vol, unanchored, sections_vol, interp, idx, every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = idx[0] + every // 2
    rows = [("face anchored at x=0", [face_vol[k] for k in (0, *DISTANCES)], [f"x={k}" for k in (0, *DISTANCES)]),
            ("unanchored", [unanchored[k] for k in (0, *DISTANCES)], [f"x={k}" for k in (0, *DISTANCES)]),
            (f"held-out x={mid} (sections every {every})", [truth[mid], sections_vol[mid], interp[mid], unanchored[mid]],
             ["truth", "anchored", "interpolation", "unanchored"])]
    fig, axes = plt.subplots(3, 5, figsize=(12, 7.6))
    for r, (title, images, labels) in enumerate(rows):
        for c in range(5):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(labels[c], fontsize=9)
        axes[r, 0].text(-0.15, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=9)
    fig.suptitle("Anchored reconstruction (shipped spheres model; yz slices at fixed x, 0 = matrix, 1 = sphere)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = _bench.parser(__doc__, out="anchors.json")
    p.add_argument("--model", default="spheres")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=6, help="truth volumes (each: three sampler runs)")
    p.add_argument("--every", type=int, default=8, help="section spacing")
    p.add_argument("--free-from", type=int, default=16, help="first x of the free region of the face case")
    p.add_argument("--preset", default="preview")
    p.add_argument("--steps", type=int)
    p.add_argument("--harmonize", type=int)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.add_argument("--reference", default="runs/reproduce/data/spheres.npy",
                   help="the training volume (benchmarks/reproduce_paper.py --stages data)")
    p.add_argument("--smoke", action="store_true", help="tiny run (32^3, 1 volume, 2 steps) for the tests")
    a = p.parse_args()
    a.out = a.out or _bench.RESULTS / "anchors.json"
    if a.smoke:
        a.size, a.count, a.steps, a.harmonize, a.every, a.free_from = 32, 1, 2, 1, 8, 8
    if a.threads:
        torch.set_num_threads(a.threads)
    ckpt = load_model(a.model)
    cfg = sampler_settings(a.preset, steps=a.steps, n_harmonize=a.harmonize)
    shape = (a.size,) * 3
    idx = list(range(0, a.size, a.every))
    r2d, r3d = a.size // 2, (a.size - a.free_from) // 2
    ref = torch.from_numpy(np.load(a.reference)) if Path(a.reference).is_file() else None
    ref_curves = None if ref is None else {
        n: correlation.metric_function(n)(ref, r3d, ndim=3, phase=1).average for n in correlation.METRICS}
    records, t0 = [], time.perf_counter()
    for i in range(a.count):
        truth = synth.spheres(shape, seed=a.seed + 1000 + i).array.astype(np.uint8)
        seed = a.seed + i
        sections = [Anchor("x", x, truth[x]) for x in idx]
        free = sample(ckpt, shape, seed, cfg, None)
        sect = sample(ckpt, shape, seed, cfg, sections)
        face = sample(ckpt, shape, seed, cfg, [Anchor("x", 0, truth[0])])
        interp = interpolate(truth, idx)
        held = [x for x in range(a.size) if x not in idx]
        pasted = free.copy()
        pasted[0] = truth[0]
        rec = {
            "exact_mismatches": int((sect[idx] != truth[idx]).sum() + (face[0] != truth[0]).sum()),
            "sections": {
                "accuracy": {"anchored": accuracy_by_distance(sect, truth, idx),
                             "interpolation": accuracy_by_distance(interp, truth, idx),
                             "unanchored": accuracy_by_distance(free, truth, idx)},
                "error_2d": {"anchored": error2d(sect[held], truth[held], r2d),
                             "interpolation": error2d(interp[held], truth[held], r2d),
                             "unanchored": error2d(free[held], truth[held], r2d)},
            },
            "face": {"continuity": {"truth": continuity(truth, truth[0]), "anchored": continuity(face, truth[0]),
                                    "pasted": continuity(pasted, truth[0])}},
            "phi": {"truth": float(truth.mean()), "sections": float(sect.mean()), "face": float(face.mean()),
                    "unanchored": float(free.mean())},
        }
        if ref_curves is not None:
            rec["face"]["free_region_error_3d"] = {"anchored": error3d(face[a.free_from:], ref_curves, r3d),
                                                   "unanchored": error3d(free[a.free_from:], ref_curves, r3d)}
        records.append(rec)
        print(f"truth {i + 1}/{a.count}: mismatches {rec['exact_mismatches']}, held-out accuracy "
              f"{rec['sections']['accuracy']['anchored']['all']:.3f} (interp "
              f"{rec['sections']['accuracy']['interpolation']['all']:.3f}), {time.perf_counter() - t0:.0f} s", flush=True)
        if i == 0 and not a.smoke:
            figure(a.out.with_suffix(".png"), truth, face, free, sect, interp, idx, a.every)
    _bench.write_result(a.out, {
        "what": "anchored reconstruction vs 3D ground truth (benchmarks/anchors.py docstring)",
        "model": a.model, "model_sha256": ckpt.sha256, "size": a.size, "count": a.count, "every": a.every,
        "sections": idx, "free_from": a.free_from, "distances": list(DISTANCES),
        "settings": {"preset": a.preset, "steps": cfg.steps, "n_harmonize": cfg.n_harmonize, "nfe": cfg.nfe,
                     "volume_fraction": ckpt.phase_fractions},
        "r_max": {"2d": r2d, "3d": r3d}, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
        "summary": summarise(records), "per_volume": records,
    }, "cpu", __file__)


if __name__ == "__main__":
    main()
