"""Seconds per volume of the whole sampler, fused (compiled) vs reference-twin updates, and the U-Net share.

UNET_PRESETS["small"] with random weights, one volume at a time, same seed and NFE in both modes; writes
benchmarks/results/sampler_<device>.json (device, versions, command, date) and prints a table.

    nice -n 10 python benchmarks/sampler_report.py [--sizes 32 64] [--preset preview] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn

from micro3diff import _ext
from micro3diff.io import device_name, provenance, write_json
from micro3diff.sampler import sample_volume, sampler_settings
from micro3diff.schedule import NoiseSchedule
from micro3diff.unet import UNET_PRESETS, UNet

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--preset", default="preview")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per case (the fastest is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on shared cores, far less sensitive to other processes' load)")
    ap.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/sampler_<device>.json)")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    modes = ["compiled", "reference"] if _ext.has_kernel("fused_step", device.type) else ["reference"]
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS["small"]).to(device).eval()
    nn.init.normal_(model.out_conv.weight, std=0.02)  # zero-initialised otherwise: eps = 0
    schedule, settings = NoiseSchedule(), sampler_settings(args.preset)
    rows = []
    for n in args.sizes:
        sample_volume(model, schedule, (n, n, n), steps=2, n_harmonize=1, device=device)  # warm-up
        runs: dict[str, list] = {m: [] for m in modes}
        for _ in range(args.repeats):  # modes interleaved, so load from other processes hits both alike
            for mode in modes:
                os.environ["M3D_OPS"] = mode
                runs[mode].append(sample_volume(model, schedule, (n, n, n), preset=settings, seed=0, device=device))
        best = {m: min(rs, key=lambda r: r.seconds) for m, rs in runs.items()}
        for mode, r in best.items():
            rows.append({"size": n, "ops": mode, "nfe": r.nfe, "seconds": r.seconds,
                         "seconds_network": r.seconds_network, "seconds_other": r.seconds_other,
                         "unet_share": r.seconds_network / r.seconds, "all_seconds": [x.seconds for x in runs[mode]]})
        if len(modes) == 2:
            fused, ref = best["compiled"], best["reference"]
            rows[-2]["reference_over_fused"] = ref.seconds / fused.seconds
            rows[-2]["other_reference_over_fused"] = ref.seconds_other / fused.seconds_other
            rows[-2]["max_abs_diff_vs_reference"] = (fused.volume - ref.volume).abs().max().item()
    os.environ.pop("M3D_OPS")

    print(f"{'size':>5} {'ops':>10} {'NFE':>5} {'s/volume':>9} {'network':>9} {'other':>8} {'U-Net share':>11} {'ref/fused':>9}")
    for r in rows:
        ratio = f"{r['reference_over_fused']:.3f}" if "reference_over_fused" in r else ""
        print(f"{r['size']:>5} {r['ops']:>10} {r['nfe']:>5} {r['seconds']:>9.2f} {r['seconds_network']:>9.2f} "
              f"{r['seconds_other']:>8.3f} {r['unet_share']:>11.3f} {ratio:>9}")
    out = args.out or RESULTS / f"sampler_{device.type}.json"
    write_json(out, {
        "benchmark": "sampler", "device": device_name(device), "device_type": device.type,
        "threads": torch.get_num_threads(), "unet": "small (random weights)", "preset": args.preset,
        "settings": settings, "repeats": args.repeats, "rows": rows,
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "versions": provenance(),
        "date": provenance()["date"],
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
