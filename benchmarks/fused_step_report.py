"""Fused multi-plane step: compiled vs reference twin, in-place vs double-buffered rotation, copy ceiling.

One rotating update R(c_x x - c_eps eps + c_z z) of a (1, N, 1, N, N) float32 volume, N in --sizes.
Cases (z from Philox in-kernel, or a given noise tensor):
  fused *               torch.ops.micro3diff.fused_step(rotate=True): new output tensor per call (double-buffered)
  fused in-place *      torch.ops.micro3diff.fused_step_rotate_: rotates x in its own storage (3-cycles of blocks)
  reference noise       reference.fused_step(noise=...): the pure-PyTorch twin
  reference philox      reference.fused_step(seed, offset): the twin with its pure-PyTorch Philox
  reference randn       reference.fused_step(noise=torch.randn_like(x)): plain PyTorch with torch's generator
  copy 12 B/voxel       dst.copy_(src), 1.5 N^3 float32 each (6 B read + 6 B written per voxel), preallocated
Effective bandwidth = 12 bytes/voxel (DESIGN.md 1.3: read x and eps, write out) / time, for every case; the
copy moves those same 12 bytes/voxel and is the in-run ceiling. Times: best of --repeats after a warm-up,
cases interleaved so that load from other processes hits all alike; slow cases stop early after
--budget seconds. CUDA times use events. Writes benchmarks/results/fused_step_<device>.json.

    nice -n 10 python benchmarks/fused_step_report.py [--sizes 64 128 256] [--device cpu] [--repeats 7] [--threads 1]
"""
from __future__ import annotations

import os
import sys

import torch

import _bench
from micro3diff import _ext, reference

COEF = (0.97, 0.31, 0.52)
BYTES_PER_VOXEL = 12


def cases(n: int, device: torch.device) -> dict:
    """name -> zero-argument callable for a (1, n, 1, n, n) volume."""
    F = torch.ops.micro3diff
    shape = (1, n, 1, n, n)
    x, eps, noise = (torch.randn(shape, device=device) for _ in range(3))
    y = x.clone()  # rotated in place, call after call
    src = torch.randn(x.numel() * 3 // 2, device=device)
    dst = torch.empty_like(src)
    return {
        "fused philox": lambda: F.fused_step(x, eps, *COEF, True, None, 1, 2),
        "fused noise": lambda: F.fused_step(x, eps, *COEF, True, noise, 1, 2),
        "fused in-place philox": lambda: F.fused_step_rotate_(y, eps, *COEF, None, 1, 2),
        "fused in-place noise": lambda: F.fused_step_rotate_(y, eps, *COEF, noise, 1, 2),
        "reference noise": lambda: reference.fused_step(x, eps, *COEF, rotate=True, noise=noise),
        "reference philox": lambda: reference.fused_step(x, eps, *COEF, rotate=True, seed=1, offset=2),
        "reference randn": lambda: reference.fused_step(x, eps, *COEF, rotate=True, noise=torch.randn_like(x)),
        "copy 12 B/voxel": lambda: dst.copy_(src),
    }


def measure(n: int, device: torch.device, repeats: int, budget: float) -> dict:
    """One row at n^3: per case ms (best), GB/s at BYTES_PER_VOXEL and the fraction of the copy's; ratios."""
    runs = _bench.interleaved(cases(n, device), repeats, budget=budget, device=device)
    best = {name: r.best for name, r in runs.items()}
    gbs = {name: BYTES_PER_VOXEL * n**3 / t / 1e9 for name, t in best.items()}
    copy = gbs["copy 12 B/voxel"]
    return {
        "size": n, "voxels": n**3,
        "cases": {name: {"ms": best[name] * 1e3, "gb_per_s": gbs[name], "of_copy": gbs[name] / copy,
                         "all_ms": [t * 1e3 for t in runs[name].seconds]} for name in runs},
        "ratios": {
            "reference_noise_over_fused_noise": best["reference noise"] / best["fused noise"],
            "reference_philox_over_fused_philox": best["reference philox"] / best["fused philox"],
            "reference_randn_over_fused_philox": best["reference randn"] / best["fused philox"],
            "double_buffered_over_inplace_philox": best["fused philox"] / best["fused in-place philox"],
            "double_buffered_over_inplace_noise": best["fused noise"] / best["fused in-place noise"],
        },
    }


def main() -> None:
    ap = _bench.parser(__doc__, out="fused_step_<device>.json")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per case (the fastest is reported)")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds after which a slow case stops repeating")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not _ext.has_kernel("fused_step", device.type):
        sys.exit(f"no compiled fused_step kernel for {device.type}: {_ext.build_info()}")
    load_before = os.getloadavg()
    rows = [measure(n, device, args.repeats, args.budget) for n in args.sizes]

    print(f"{_bench.device_label(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ms (GB/s at {BYTES_PER_VOXEL} B/voxel, fraction of copy)")
    print(f"{'case':>22} " + " ".join(f"{str(r['size']) + '^3':>26}" for r in rows))
    for name in rows[0]["cases"]:
        cells = [r["cases"][name] for r in rows]
        print(f"{name:>22} " + " ".join(f"{c['ms']:9.3f} ({c['gb_per_s']:6.1f}, {c['of_copy']:4.2f})" .rjust(26)
                                        for c in cells))
    for key in rows[0]["ratios"]:
        print(f"{key:>36} " + " ".join(f"{r['ratios'][key]:8.2f}" for r in rows))
    _bench.write_result(args.out or _bench.RESULTS / f"fused_step_{device.type}.json", {
        "benchmark": "fused_step", "device_type": device.type, "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "volume": "(1, N, 1, N, N) float32, rotate=True", "bytes_per_voxel": BYTES_PER_VOXEL,
        "ceiling": "dst.copy_(src) of 1.5 N^3 float32 (12 B/voxel moved), preallocated",
        "timing": f"best of {args.repeats} after a warm-up, cases interleaved, budget {args.budget} s per case",
        "rows": rows,
    }, device, __file__)


if __name__ == "__main__":
    main()
