"""Natural-variability floor and shuffled baseline of the carbonate micrograph (paper case IV), S2 and L in 2D.

Floor: random 64 x 64 crops of the 256 x 256 image against the full image (error rate, eq. 24, of each
crop's curve, and of the mean crop curve); also the 16 non-overlapping 64 x 64 tiles. Baseline: the
image's pixels randomly permuted (several seeds). Non-periodic estimators, phase 1, r = 0..32 (half the
crop). Reads the image at run time (never copied); writes benchmarks/results/carbonate_floor.json.

    python benchmarks/carbonate_floor.py [--data ../shared/data/li2018/carbonate_resized.npy]
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

import _bench
from micro3diff import phases
from micro3diff.io.arrays import read_array
from micro3diff.metrics import compare, correlation, protocol


def summary(errors: torch.Tensor) -> dict:
    return {**protocol.summary(errors), "median": float(errors.median())}


def main() -> None:
    parser = _bench.parser(__doc__, out="carbonate_floor.json")
    parser.add_argument("--data", type=Path, default=_bench.CARBONATE)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--shuffles", type=int, default=8)
    args = parser.parse_args()
    image = phases.binarize(read_array(args.data))
    r_max, size = args.crop // 2, (args.crop, args.crop)
    tiles = image.unfold(0, args.crop, args.crop).unfold(1, args.crop, args.crop).reshape(-1, *size)
    result = {}
    for name in correlation.METRICS:
        fn = correlation.metric_function(name)
        ref = fn(image, r_max)
        floor = compare.natural_variability_floor(image, size, name, r_max, n_crops=args.crops, seed=0)
        tile_curves = fn(tiles, r_max, ndim=2).average
        shuffles = [compare.shuffled_baseline(image, name, r_max, seed=s) for s in range(args.shuffles)]
        result[name] = {
            "reference": [float(v) for v in ref.average],
            "floor_random_crops": {**summary(floor.errors),
                                   "error_of_mean_curve": float(compare.error_rate(floor.curves.mean(0), ref.average))},
            "floor_tiles": {**summary(compare.error_rate(tile_curves, ref.average)),
                            "error_of_mean_curve": float(compare.error_rate(tile_curves.mean(0), ref.average))},
            "shuffled_baseline": summary(torch.cat([b.errors for b in shuffles])),
        }
        fl, base = result[name]["floor_random_crops"], result[name]["shuffled_baseline"]
        print(f"{name:>12}: floor {fl['mean']:.2f} ± {fl['std']:.2f} % per {args.crop}^2 crop "
              f"(mean curve {fl['error_of_mean_curve']:.2f} %), tiles {result[name]['floor_tiles']['mean']:.2f} %, "
              f"shuffled baseline {base['mean']:.2f} ± {base['std']:.2f} %")
    _bench.write_result(args.out or _bench.RESULTS / "carbonate_floor.json", {
        "data": {"file": args.data.name, "sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
                 "shape": list(image.shape), "volume_fraction": float(correlation.volume_fraction(image))},
        "settings": {"crop": args.crop, "random_crops": args.crops, "crop_seed": 0, "shuffle_seeds": args.shuffles,
                     "r_max": r_max, "periodic": False, "phase": 1,
                     "error_rate": "eq. 24 on the radial S2 / axis-mean L curve, r = 0..r_max"},
        "results": result,
    }, "cpu", __file__)


if __name__ == "__main__":
    main()
