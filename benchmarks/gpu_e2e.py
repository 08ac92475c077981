"""End-to-end GPU report: reference sampler vs the fast path, throughput, memory, quality.

One script for the lent machine; each part writes its result into one JSON file as soon as it is done, so
a later call resumes (parts already there are skipped unless --redo). Parts:
  env         device, torch / CUDA / cuDNN versions, build info
  speed       reference (fp32 eager, M3D_OPS=reference ops) vs optimized (compiled ops + SamplerOptions.fast),
              same model, seed and NFE, for the paper and small U-Nets (random weights) at 64^3: seconds per
              network call (slope between two NFEs), fixed cost, ratio, U-Net share, relative difference
  throughput  fast path: volumes/hour at 64^3 and 128^3 (paper and small U-Net, several volumes per batch)
              at the paper / quality / fast presets, from the per-call slope; peak GPU memory
  maxsize     largest cubic side that fits for the paper U-Net (all slices per forward, and --chunk
              slices per forward), bisection in steps of 32 (eager bf16 + channels_last probes, 1 call each)
  fused       fused-step bandwidth vs copy at 256^3 (benchmarks/fused_step_report.measure)
  quality     shipped "spheres" model: 3D S2 / L error rates (paper 3.5) at each preset vs the paper preset,
              fast path and fp32 reference at the fast preset, with the floor and the shuffled baseline
Targets (TARGETS) are evaluated from whatever parts are present and printed last.

    python benchmarks/gpu_e2e.py --parts env fused speed          # on the lent GPU, < 10 min per call
    python benchmarks/gpu_e2e.py --parts throughput maxsize
    python benchmarks/gpu_e2e.py --parts quality
    python benchmarks/gpu_e2e.py --smoke --out /tmp/e2e.json      # CPU, tiny sizes: tests the script itself
"""
from __future__ import annotations

import dataclasses
import gc
import json
import re
import sys
import time

import torch

import _bench
import fused_step_report
from micro3diff import _ext, phases
from micro3diff.diffusion.network import SamplerOptions
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import PRESETS
from micro3diff.io.checkpoint import load_checkpoint
from micro3diff.io.files import provenance
from micro3diff.metrics import compare, correlation
from micro3diff.phases import to_phases
from micro3diff.synth import generators as synth

PARTS = ("env", "speed", "throughput", "maxsize", "fused", "quality")
TARGETS = {"speedup_paper_64": 3.0, "unet_share": 0.97, "fused_of_copy_256": 0.8, "paper_64_paper_preset_s": 180.0}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that differs between the real run and --smoke (CPU, tiny)."""

    unets: tuple[str, ...] = ("paper", "small")
    speed_side: int = 64
    nfe_pairs: tuple[tuple[int, int], tuple[int, int]] = ((11, 3), (21, 3))  # (steps, n_h): NFE 31 and 61
    throughput: tuple[tuple[str, int, int], ...] = (("paper", 64, 1), ("paper", 64, 4), ("paper", 128, 1),
                                                    ("small", 64, 8), ("small", 128, 2))  # (unet, side, volumes)
    throughput_nfe: tuple[tuple[int, int], tuple[int, int]] = ((4, 2), (10, 2))  # NFE 7 and 19
    maxsize_unet: str = "paper"
    maxsize_range: tuple[int, int, int] = (64, 512, 32)  # lo (known to fit), hi, step
    fused_side: int = 256
    fused_repeats: int = 20
    quality_model: str = "spheres"
    quality_presets: tuple[str, ...] = ("preview", "fast", "quality", "paper")
    quality_steps: int | None = None  # override steps of every preset (smoke)
    quality_volumes: int = 4
    quality_side: int | None = None  # None: the model's training image size
    reference_shape: tuple[int, int, int] = (300, 64, 64)
    r_max: int = 16


SMOKE = Sizes(unets=("tiny",), speed_side=8, nfe_pairs=((1, 1), (2, 1)), throughput=(("tiny", 8, 2),),
              throughput_nfe=((1, 1), (2, 1)), maxsize_unet="tiny", maxsize_range=(8, 24, 8), fused_side=16,
              fused_repeats=1, quality_presets=("preview",), quality_steps=1, quality_volumes=1,
              quality_side=16, reference_shape=(32, 32, 32), r_max=4)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed_pair(model, side: int, volumes: int, pairs, device, options, ops: str) -> dict:
    """Two runs of different NFE (same seed): per-call seconds = slope, fixed seconds = intercept."""
    schedule, runs = NoiseSchedule(), []
    with _bench.ops_mode(ops):
        sample_volume(model, schedule, (side,) * 3, volumes, steps=1, n_harmonize=1, device=device,
                      options=options)  # warm-up (cuDNN, kernels, allocator)
        peak_reset(device)
        for steps, n_h in pairs:
            runs.append(sample_volume(model, schedule, (side,) * 3, volumes, steps=steps, n_harmonize=n_h,
                                      seed=0, device=device, options=options))
    (a, b) = runs
    per_call = (b.seconds - a.seconds) / (b.nfe - a.nfe)
    if per_call <= 0:  # noise at smoke sizes: fall back to the mean
        per_call = b.seconds / b.nfe
    fixed = max(0.0, b.seconds - per_call * b.nfe)
    return {"nfe": [a.nfe, b.nfe], "seconds": [a.seconds, b.seconds],
            "seconds_network": [a.seconds_network, b.seconds_network], "seconds_per_call": per_call,
            "fixed_seconds": fixed, "unet_share": b.seconds_network / b.seconds, "peak_gib": peak_gib(device),
            "volume": b.volume.cpu()}


def per_hour(r: dict, nfe: int, volumes: int) -> float:
    return 3600.0 * volumes / (r["fixed_seconds"] + r["seconds_per_call"] * nfe)


# --- parts -----------------------------------------------------------------------------------------


def part_env(device: torch.device, sizes: Sizes, args) -> dict:
    out = {"device": _bench.device_label(device), "device_type": device.type, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "build": _ext.build_info(),
           "python": sys.version.split()[0]}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(sm_count=p.multi_processor_count, memory_gib=p.total_memory / 2**30,
                   capability=f"{p.major}.{p.minor}")
    return out


def part_speed(device: torch.device, sizes: Sizes, args) -> dict:
    rows = {}
    for name in sizes.unets:
        model = _bench.random_unet(name, device)
        ref = timed_pair(model, sizes.speed_side, 1, sizes.nfe_pairs, device, None, "reference")
        opt = timed_pair(model, sizes.speed_side, 1, sizes.nfe_pairs, device, SamplerOptions.fast(device), "auto")
        diff = float((opt["volume"] - ref["volume"]).norm() / ref["volume"].norm())
        agree = float((to_phases(opt["volume"]) == to_phases(ref["volume"])).float().mean())
        rows[name] = {
            "side": sizes.speed_side, "reference": {k: v for k, v in ref.items() if k != "volume"},
            "optimized": {k: v for k, v in opt.items() if k != "volume"},
            "speedup_per_call": ref["seconds_per_call"] / opt["seconds_per_call"],
            "speedup_equal_nfe": ref["seconds"][1] / opt["seconds"][1],
            "relative_l2_difference": diff, "phase_agreement": agree,
            "paper_preset_seconds": opt["fixed_seconds"] + opt["seconds_per_call"] * PRESETS["paper"].nfe,
            "paper_preset_seconds_reference": ref["fixed_seconds"] + ref["seconds_per_call"] * PRESETS["paper"].nfe,
        }
        del model
        peak_reset(device)
    return {"rows": rows, "options": SamplerOptions.fast(device).to_dict(),
            "note": "same seed and NFE; per-call = slope between the two NFEs; optimized eps is bf16, so the "
                    "volumes differ by rounding amplified along the chain (relative_l2_difference)"}


def part_throughput(device: torch.device, sizes: Sizes, args) -> dict:
    rows = []
    for name, side, volumes in sizes.throughput:
        model = _bench.random_unet(name, device)
        r = timed_pair(model, side, volumes, sizes.throughput_nfe, device, SamplerOptions.fast(device), "auto")
        rows.append({"unet": name, "side": side, "volumes_per_batch": volumes,
                     **{k: v for k, v in r.items() if k != "volume"},
                     "volumes_per_hour": {p: per_hour(r, PRESETS[p].nfe, volumes)
                                          for p in ("paper", "quality", "fast")}})
        print(f"  {name:>6} {side}^3 x{volumes}: {r['seconds_per_call'] * 1e3:.2f} ms/call, "
              f"{rows[-1]['volumes_per_hour']['paper']:.1f} vol/h at paper, peak {r['peak_gib']} GiB", flush=True)
        del model
        peak_reset(device)
    return {"rows": rows, "nfe_of_presets": {p: s.nfe for p, s in PRESETS.items()}}


def fits(model, side: int, max_batch: int | None, device: torch.device) -> tuple[bool, float, float | None]:
    """One denoiser call (+ update) at side^3, eager bf16 + channels_last; (fits, seconds, peak GiB)."""
    opts = dataclasses.replace(SamplerOptions.fast(device), cuda_graph=False)
    peak_reset(device)
    t0 = time.perf_counter()
    try:
        sample_volume(model, NoiseSchedule(), (side,) * 3, steps=1, n_harmonize=1, device=device,
                      max_batch=max_batch, options=opts)
        ok = True
    except torch.cuda.OutOfMemoryError:
        ok = False
    seconds, peak = time.perf_counter() - t0, peak_gib(device)
    peak_reset(device)
    return ok, seconds, peak


def largest_side(probe, lo: int, hi: int, step: int, time_cap: float) -> dict:
    """Bisection on multiples of ``step`` in [lo, hi] for the largest side with probe(side)[0] True."""
    trials = []

    def run(side: int) -> bool:
        ok, seconds, peak = probe(side)
        trials.append({"side": side, "fits": ok, "seconds": seconds, "peak_gib": peak})
        print(f"  side {side}: {'fits' if ok else 'OOM'} ({seconds:.1f} s, peak {peak} GiB)", flush=True)
        return ok

    if not run(lo):
        return {"largest": None, "trials": trials}
    good, bad = lo, None
    if run(hi):
        return {"largest": hi, "capped_at": hi, "trials": trials}
    bad = hi
    while bad - good > step:
        mid = good + (bad - good) // 2 // step * step
        if mid == good:
            break
        if trials[-1]["seconds"] > time_cap:
            return {"largest": good, "lower_bound_only": True, "trials": trials}
        good, bad = (mid, bad) if run(mid) else (good, mid)
    return {"largest": good, "trials": trials}


def part_maxsize(device: torch.device, sizes: Sizes, args) -> dict:
    model = _bench.random_unet(sizes.maxsize_unet, device)
    lo, hi, step = sizes.maxsize_range
    out = {"unet": sizes.maxsize_unet, "range": [lo, hi, step], "probe": "1 call, eager bf16 + channels_last"}
    for label, max_batch in (("all_slices", None), (f"chunk_{args.chunk}", args.chunk)):
        print(f"maxsize {label}", flush=True)
        out[label] = largest_side(lambda s: fits(model, s, max_batch, device), lo, hi, step, args.probe_cap)
    return out


def part_fused(device: torch.device, sizes: Sizes, args) -> dict:
    if not _ext.has_kernel("fused_step", device.type):
        return {"skipped": f"no compiled fused_step kernel for {device.type}: {_ext.build_info()}"}
    row = fused_step_report.measure(sizes.fused_side, device, sizes.fused_repeats, budget=60.0)
    return {**row, "bytes_per_voxel": fused_step_report.BYTES_PER_VOXEL,
            "of_copy_inplace_philox": row["cases"]["fused in-place philox"]["of_copy"],
            "of_copy_double_buffered_philox": row["cases"]["fused philox"]["of_copy"]}


def part_quality(device: torch.device, sizes: Sizes, args) -> dict:
    ckpt = load_checkpoint(sizes.quality_model, device)
    side = sizes.quality_side or int(ckpt.data.get("image_size", 64))
    ref = phases.binarize(torch.from_numpy(synth.spheres(sizes.reference_shape, seed=1).array))
    r = sizes.r_max
    curves = {m: correlation.metric_function(m)(ref, r).average for m in correlation.METRICS}
    floors = {m: compare.natural_variability_floor(ref, (side,) * 3, m, r, n_crops=8, seed=0).errors for m in curves}
    base = {m: float(compare.shuffled_baseline(ref, m, r, seed=0).errors[0]) for m in curves}
    schedule = NoiseSchedule(ckpt.schedule)
    runs = [(p, "fast_path") for p in sizes.quality_presets] + [("fast", "fp32_reference")]
    rows = []
    for preset, mode in runs:
        opts = SamplerOptions.fast(device) if mode == "fast_path" else None
        t0 = time.perf_counter()
        res = sample_volume(ckpt.model, schedule, (side,) * 3, sizes.quality_volumes, preset=preset,
                            steps=sizes.quality_steps, seed=100, device=device, options=opts)
        vols = res.phases.cpu()
        row = {"preset": preset, "mode": mode, "nfe": res.nfe, "seconds": time.perf_counter() - t0,
               "volume_fraction": float(vols.float().mean())}
        for m, ref_curve in curves.items():
            err = compare.error_rate(correlation.metric_function(m)(vols, r, ndim=3).average, ref_curve)
            row[m] = {"mean": float(err.mean()), "per_volume": err.tolist()}
        rows.append(row)
        print(f"  {preset:>8} {mode:>14}: S2 {row['two_point']['mean']:.2f} %, L {row['lineal_path']['mean']:.2f} % "
              f"({row['seconds']:.1f} s)", flush=True)
    paper = next((x for x in rows if x["preset"] == "paper" and x["mode"] == "fast_path"), None)
    for row in rows:
        if paper is not None:
            row["minus_paper"] = {m: row[m]["mean"] - paper[m]["mean"] for m in curves}
    return {"model": sizes.quality_model, "side": side, "volumes": sizes.quality_volumes, "r_max": r,
            "reference": f"synth.spheres({list(sizes.reference_shape)}, seed=1) (the model's training data)",
            "floor": {m: {"mean": float(f.mean()), "std": float(f.std()) if f.numel() > 1 else 0.0}
                      for m, f in floors.items()},
            "shuffled": base, "rows": rows}


def targets(parts: dict) -> dict:
    out = {}
    speed = parts.get("speed", {}).get("rows", {})
    if "paper" in speed:
        out["speedup_paper_64"] = speed["paper"]["speedup_equal_nfe"]
        out["paper_64_paper_preset_s"] = speed["paper"]["paper_preset_seconds"]
    if speed:
        out["unet_share"] = min(r["optimized"]["unet_share"] for r in speed.values())
    if "of_copy_inplace_philox" in parts.get("fused", {}):
        out["fused_of_copy_256"] = parts["fused"]["of_copy_inplace_philox"]
    return {k: {"value": v, "target": TARGETS[k],
                "met": v <= TARGETS[k] if k.endswith("_s") else v >= TARGETS[k]} for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = _bench.parser(__doc__, out="gpu_e2e_<device name>.json")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU-friendly): checks the script, not the GPU")
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--redo", action="store_true", help="rerun parts already in the JSON file")
    ap.add_argument("--chunk", type=int, default=32, help="slices per forward for the chunked maxsize search")
    ap.add_argument("--probe-cap", type=float, default=90.0, help="stop the bisection after a probe this slow (s)")
    args = ap.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = SMOKE if args.smoke else Sizes()
    name = _bench.device_label(device)
    out = args.out or _bench.RESULTS / f"gpu_e2e_{slug(name)}{'_smoke' if args.smoke else ''}.json"
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.setdefault("parts", {})
    doc.update(benchmark="gpu_e2e", device_type=device.type, smoke=args.smoke, cuda=torch.version.cuda)
    for part in args.parts:
        if part in doc["parts"] and not args.redo:
            print(f"{part}: already in {out} (--redo to rerun)")
            continue
        print(f"{part} ...", flush=True)
        t0 = time.perf_counter()
        result = globals()[f"part_{part}"](device, sizes, args)
        result.update(seconds=time.perf_counter() - t0, date=provenance()["date"],
                      command=_bench.command(__file__, argv))
        doc["parts"][part] = result
        doc["targets"] = targets(doc["parts"])
        _bench.write_result(out, doc, device, __file__, argv)
        print(f"{part}: {result['seconds']:.1f} s", flush=True)
    doc["targets"] = targets(doc["parts"])
    _bench.write_result(out, doc, device, __file__, argv)
    print(f"\n{name}: targets")
    for k, t in doc["targets"].items():
        print(f"  {k:>26}: {t['value']:10.3f} (target {'<=' if k.endswith('_s') else '>='} {t['target']}) "
              f"{'MET' if t['met'] else 'not met'}")
    return doc


if __name__ == "__main__":
    main()
