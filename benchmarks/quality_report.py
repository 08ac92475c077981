"""Quality table: how right are the volumes? One row per (case, model, sampler setting), judged by numbers.

For each case (spheres 3D, polycrystal 2D, carbonate 2D) and each sampler setting: phi generated vs reference,
S2 and L error per volume (mean +- sd) and of the mean curve, the per-volume natural-variability floor of the
same size, the shuffled baseline, error / floor, U-Net calls and seconds per volume. ``--2d`` rows score the 2D
model alone: 2D samples against the reference images, with the floor of real crops of the same size.

Rows accumulate in benchmarks/results/quality.json (a row is keyed by case, model, setting, size, count and
seed; an existing key is skipped unless --redo), and quality.md is rewritten from all rows each run. Each 3D
volume is kept in runs/quality_cache/ as it is made (by seed), so a killed run resumes at its next volume, and
``--volumes-only`` runs with other ``--seed`` / ``--count`` make part of a row's volumes in a second process
(they write no row; the row's own run then reads them).

Settings (``--settings``, comma-separated): a preset name with ``+``-joined overrides, e.g. ``preview``,
``fast``, ``preview+h1``, ``fast+s50+h6``, ``preview+vf`` (volume-fraction control at the training data's phi, with the model's x0-hat moments where
its checkpoint has them: rule "variance+shift"), ``preview+vfq`` (the same control with the shift alone, rule
"shift"; the only rule before the checkpoints carried moments),
``preview+ddim1`` (DDIM eta = 1: posterior variance beta-tilde), ``preview+prior`` (x_T from q(x_T) on the data's
moments), ``preview+norot`` (no plane rotation: stacked 2D samples).

  PYTHONPATH=. python benchmarks/quality_report.py --cases spheres --models 'runs/v1/{case}/model.safetensors' \
      --settings preview,fast --size 64 --count 10 --threads 2
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import time
from pathlib import Path

import numpy as np

import micro3diff  # noqa: F401  (before torch, as in `m3d`: its transparent-huge-page setting applies)
import torch

import _bench
from _cases import CASES, reference_images
from micro3diff.diffusion.network import SamplerOptions
from micro3diff.diffusion.sample2d import sample_images
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import sampler_settings
from micro3diff.io.checkpoint import load_checkpoint, resolve
from micro3diff.axes import PLANES
from micro3diff.io.files import atomic_path, provenance, write_json
from micro3diff.metrics import correlation, protocol
from micro3diff.phases import to_phases

CACHE = Path("runs/quality_cache")  # one .npz per finished volume of a row, for resuming


def parse_setting(spec: str) -> dict:
    """'fast+s50+h6+vf' -> sampler keyword arguments and flags (see the module docstring)."""
    preset, *mods = spec.split("+")
    out: dict = {"preset": preset, "vf": False, "vf_shift_only": False, "prior": False, "rotate": True}
    for m in mods:
        if m[:1] in "sh" and m[1:].isdigit():
            out["steps" if m[0] == "s" else "n_harmonize"] = int(m[1:])
        elif m in ("vf", "prior"):
            out[m] = True
        elif m == "vfq":
            out.update(vf=True, vf_shift_only=True)
        elif m == "norot":
            out["rotate"] = False
        elif m.startswith("ddim"):
            out.update(method="ddim", eta=float(m[4:] or 0))
        else:
            raise SystemExit(f"unknown setting modifier {m!r} in {spec!r}")
    return out


def make_volumes(case: str, spec: str, a) -> tuple[list[torch.Tensor], list[float], int, str | None]:
    """The row's 3D volumes (seeds a.seed .. a.seed + a.count - 1) as label tensors, their seconds, the calls per
    volume and the volume-fraction rule; each is read from / written to the cache."""
    ckpt = load_checkpoint(a.models.format(case=case), a.device)
    sched, st = NoiseSchedule(ckpt.schedule), parse_setting(spec)
    vf = [float(reference_images(case, a).double().mean())] if st["vf"] else None
    prior = ckpt.prior if st["prior"] else None
    kw = {k: st[k] for k in ("steps", "n_harmonize", "method", "eta") if k in st}
    moments = ckpt.x0_moments if st["vf"] and not st["vf_shift_only"] else None
    vf_rule = None if not st["vf"] else "variance+shift" if moments else "shift"
    what = [case, ckpt.sha256, spec, a.size, str(a.results.resolve())]  # harnesses: their own folder
    cache = CACHE / hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    labels, seconds, nfe = [], [], 0
    for i in range(a.count):
        done = cache / f"seed_{a.seed + i}.npz"
        if done.is_file():  # made by an earlier, interrupted run of this row, or a --volumes-only run
            with np.load(done) as f:
                labels.append(torch.from_numpy(f["labels"]))
                seconds.append(float(f["seconds"]))
                nfe = int(f["nfe"])
            continue
        res = sample_volume(ckpt.model, sched, (a.size,) * 3, 1, preset=st["preset"], seed=a.seed + i,
                            rotate=st["rotate"], prior=prior, volume_fraction=vf, device=a.device,
                            x0_moments=dict.fromkeys(PLANES, moments) if moments else None,
                            options=SamplerOptions.fast(a.device), **kw)
        seconds.append(res.seconds)
        labels.append(res.phases[0].cpu())
        nfe = res.nfe
        with atomic_path(done) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, labels=labels[-1].numpy(), seconds=res.seconds, nfe=nfe)
        print(f"  {case} {spec} volume {i + 1}/{a.count} (seed {a.seed + i}): phi {labels[-1].float().mean():.3f}, "
              f"{res.seconds:.1f} s", flush=True)
    return labels, seconds, nfe, vf_rule


def run_row(case: str, model: str, spec: str, a) -> dict:
    ckpt = load_checkpoint(model, a.device)
    sched = NoiseSchedule(ckpt.schedule)
    st = parse_setting(spec)
    ref = reference_images(case, a)
    phi_ref = float(ref.double().mean())
    if a.two_d:
        cfg = sampler_settings(st["preset"], **{k: st[k] for k in ("steps", "n_harmonize", "method", "eta") if k in st})
        t0 = time.perf_counter()
        imgs = sample_images(ckpt.model, sched, a.count, a.size, cfg.steps, seed=a.seed, device=a.device,
                             method=cfg.method, eta=cfg.eta, prior=ckpt.prior if st["prior"] else None)
        seconds = [(time.perf_counter() - t0) / a.count]
        gen = to_phases(imgs).cpu()
        nfe = cfg.steps
    else:
        labels, seconds, nfe, vf_rule = make_volumes(case, spec, a)
        gen = torch.stack(labels)
    mode = "2d-model" if a.two_d else CASES[case]["mode"]
    r_max = min(gen.shape[1:]) // 2
    row = {"case": case, "model": model, "model_sha256": ckpt.sha256[:16], "schedule": ckpt.schedule.__dict__,
           "training_step": ckpt.training.get("step"), "setting": spec, "mode": mode, "size": a.size,
           "count": a.count, "seed": a.seed, "nfe": nfe, "seconds_per_volume": protocol.summary(torch.tensor(seconds)),
           "threads": torch.get_num_threads(), "phi_reference": phi_ref, "vf_rule": None if a.two_d else vf_rule,
           "phi_generated": protocol.summary(gen.flatten(1).double().mean(1)), "metrics": {}}
    for name in correlation.METRICS:
        if a.two_d:
            # a 3D reference: its slices along the first axis
            m = protocol.evaluate_images(ref, gen, name, r_max, crops=a.crops, seed=a.seed)
        elif mode == "3d":
            m = protocol.evaluate_3d(ref, gen, name, r_max, crops=a.crops, seed=a.seed)
        else:
            m = protocol.evaluate_planes(ref, gen, name, r_max, crops=a.crops, floor_repeats=a.floor_repeats,
                                         seed=a.seed)
        keep = ("error_per_volume", "error_of_mean_curve", "floor_volume", "shuffled")
        row["metrics"][name] = {k: m[k] for k in keep} | {"paper": CASES[case]["paper"][name]}
    return row


def key(row: dict) -> tuple:
    return (row["case"], row["model_sha256"], row["setting"], row["mode"], row["size"], row["count"], row["seed"])


def setting_label(row: dict) -> str:
    """The setting, with the volume-fraction rule of a 3D row (rows made before rules had names: "shift")."""
    vf = row["mode"] != "2d-model" and "+vf" in row["setting"]
    return f"{row['setting']} ({row.get('vf_rule') or 'shift'})" if vf else row["setting"]


def write_md(rows: list[dict], results: Path) -> None:
    lines = ["# Quality: generated vs reference (error rates eq. 24, %)", "",
             "Written by `benchmarks/quality_report.py` from `quality.json`. Per-volume errors are mean ± sd over "
             "volumes; *floor* is the per-volume error of real data of the same size (natural variability); "
             "*shuffled*: the reference's voxels permuted (right phi, no structure); *x floor*: per-volume error / "
             "floor mean. Target: phi within ±0.02, per-volume error <= max(1.5 x floor, paper). A `+vf` setting names "
             "its volume-fraction rule: *shift* (x0-hat shifted to phi; every row made before the checkpoints carried "
             "x0-hat moments) or *variance+shift* (first scaled to the variance the model gives on real images).", "",
             "| case | mode | model sha256 (step) | setting | size x n | calls | s / vol | phi gen (ref) | S2 per vol | "
             "S2 mean curve | S2 floor | S2 x floor | S2 shuffled | L per vol | L mean curve | L floor | L x floor | "
             "L shuffled |", "|" + "---|" * 18]
    for r in rows:
        name = Path(r["model"]).parent.name or r["model"]
        cells = [r["case"], r["mode"], f"{name} {r['model_sha256'][:8]} ({r['training_step']}, "
                 f"{r['schedule']['kind']}/{r['schedule'].get('prediction', 'eps')})", setting_label(r),
                 f"{r['size']} x {r['count']}", str(r["nfe"]), f"{r['seconds_per_volume']['mean']:.1f}",
                 f"{r['phi_generated']['mean']:.3f} ± {r['phi_generated']['std']:.3f} ({r['phi_reference']:.3f})"]
        for name in correlation.METRICS:
            m = r["metrics"][name]
            e, f = m["error_per_volume"], m["floor_volume"]
            cells += [f"{e['mean']:.1f} ± {e['std']:.1f}", f"{m['error_of_mean_curve']:.1f}",
                      f"{f['mean']:.1f}", f"{e['mean'] / f['mean']:.2f}", f"{m['shuffled']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Commands, devices and dates of every row are in quality.json.", ""]
    (results / "quality.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="spheres,polycrystal,carbonate")
    p.add_argument("--models", default="{case}", help="model per case: a shipped name or a path; {case} is replaced")
    p.add_argument("--settings", default="preview", help="comma-separated settings (see the module docstring)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--crops", type=int, default=64)
    p.add_argument("--floor-repeats", type=int, default=16)
    p.add_argument("--2d", dest="two_d", action="store_true", help="score the 2D model alone (2D samples)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--root", default="runs/reproduce")
    p.add_argument("--carbonate", default=str(_bench.CARBONATE))
    p.add_argument("--redo", action="store_true")
    p.add_argument("--volumes-only", action="store_true", help="make and cache the 3D volumes, write no row")
    p.add_argument("--note", default="", help="what else ran on the machine (kept in each row)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", type=Path, default=_bench.RESULTS, help="folder of quality.json / quality.md")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.results.mkdir(parents=True, exist_ok=True)
    path = a.results / "quality.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    rows = doc["rows"]
    for case in [c for c in a.cases.split(",") if c]:
        for spec in [s for s in a.settings.split(",") if s]:
            model = a.models.format(case=case)
            sha = hashlib.sha256(resolve(model).read_bytes()).hexdigest()[:16]
            probe = {"case": case, "model_sha256": sha, "setting": spec, "mode": "2d-model" if a.two_d else
                     CASES[case]["mode"], "size": a.size, "count": a.count, "seed": a.seed}
            if a.volumes_only and not a.two_d:
                make_volumes(case, spec, a)
                continue
            if any(key(r) == key(probe) for r in rows) and not a.redo:
                print(f"skip {key(probe)} (in quality.json; --redo to rerun)")
                continue
            row = run_row(case, model, spec, a)
            row.update(command=_bench.command(__file__), date=datetime.date.today().isoformat(), note=a.note,
                       device=_bench.device_label(a.device), provenance=provenance())
            doc = json.loads(path.read_text()) if path.is_file() else {"rows": []}  # another run may have written
            rows = doc["rows"] = [r for r in doc["rows"] if key(r) != key(row)] + [row]
            write_json(path, doc)
            write_md(rows, a.results)
            s2, lp = row["metrics"]["two_point"], row["metrics"]["lineal_path"]
            print(f"{case} {spec}: phi {row['phi_generated']['mean']:.3f} ({row['phi_reference']:.3f}), "
                  f"S2 {s2['error_per_volume']['mean']:.1f} (floor {s2['floor_volume']['mean']:.1f}, shuffled "
                  f"{s2['shuffled']:.1f}), L {lp['error_per_volume']['mean']:.1f} (floor "
                  f"{lp['floor_volume']['mean']:.1f}), {row['nfe']} calls, "
                  f"{row['seconds_per_volume']['mean']:.1f} s/vol", flush=True)
    if path.is_file():  # also with --cases '': quality.md rewritten from every row
        write_md(json.loads(path.read_text())["rows"], a.results)


if __name__ == "__main__":
    main()
