"""Seconds per volume of the whole sampler, fused (compiled) vs reference-twin updates, and the U-Net share.

UNET_PRESETS["small"] with random weights, one volume at a time, same seed and NFE in both modes; writes
benchmarks/results/sampler_<device>.json (device, versions, command, date) and prints a table.

    nice -n 10 python benchmarks/sampler_report.py [--sizes 32 64] [--preset preview] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import torch

import _bench
from micro3diff import _ext
from micro3diff.diffusion.sampler import sample_volume
from micro3diff.diffusion.schedule import NoiseSchedule
from micro3diff.diffusion.settings import sampler_settings


def main() -> None:
    ap = _bench.parser(__doc__, out="sampler_<device>.json")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--preset", default="preview")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per case (the fastest is reported)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on shared cores, far less sensitive to other processes' load)")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    modes = ["compiled", "reference"] if _ext.has_kernel("fused_step", device.type) else ["reference"]
    model = _bench.random_unet("small", device)
    schedule, settings = NoiseSchedule(), sampler_settings(args.preset)

    def sample(n: int, mode: str):
        with _bench.ops_mode(mode):
            return sample_volume(model, schedule, (n, n, n), preset=settings, seed=0, device=device)

    rows = []
    for n in args.sizes:
        sample_volume(model, schedule, (n, n, n), steps=2, n_harmonize=1, device=device)  # warm-up
        runs = _bench.interleaved({m: lambda m=m: sample(n, m) for m in modes}, args.repeats, warmup=False)
        for mode, t in runs.items():
            r = t.output
            rows.append({"size": n, "ops": mode, "nfe": r.nfe, "seconds": r.seconds,
                         "seconds_network": r.seconds_network, "seconds_other": r.seconds_other,
                         "unet_share": r.seconds_network / r.seconds, "all_seconds": t.seconds})
        if len(modes) == 2:
            fused, ref = runs["compiled"].output, runs["reference"].output
            rows[-2]["reference_over_fused"] = ref.seconds / fused.seconds
            rows[-2]["other_reference_over_fused"] = ref.seconds_other / fused.seconds_other
            rows[-2]["max_abs_diff_vs_reference"] = (fused.volume - ref.volume).abs().max().item()

    print(f"{'size':>5} {'ops':>10} {'NFE':>5} {'s/volume':>9} {'network':>9} {'other':>8} {'U-Net share':>11} {'ref/fused':>9}")
    for r in rows:
        ratio = f"{r['reference_over_fused']:.3f}" if "reference_over_fused" in r else ""
        print(f"{r['size']:>5} {r['ops']:>10} {r['nfe']:>5} {r['seconds']:>9.2f} {r['seconds_network']:>9.2f} "
              f"{r['seconds_other']:>8.3f} {r['unet_share']:>11.3f} {ratio:>9}")
    _bench.write_result(args.out or _bench.RESULTS / f"sampler_{device.type}.json", {
        "benchmark": "sampler", "device_type": device.type, "threads": torch.get_num_threads(),
        "unet": "small (random weights)", "preset": args.preset, "settings": settings, "repeats": args.repeats,
        "timing": "modes interleaved; the run with the least wall time is reported, all_seconds are wall times",
        "rows": rows,
    }, device, __file__)


if __name__ == "__main__":
    main()
