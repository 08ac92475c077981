"""Training throughput (images/s) of ``micro3diff.training.loop.train`` per preset, measured by the training loop itself.

Runs the real loop (data crops, forward, backward, AdamW, EMA; checkpoints off until the end) on a synthetic
binary volume and reports the images/s of the log windows after the first (warm-up) one.

    python benchmarks/train_throughput.py --device cpu --presets tiny small --size 64
writes benchmarks/results/train_throughput_<device type>.json (device, versions, command, date).
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import _bench
from micro3diff.diffusion.unet import UNet
from micro3diff.training.config import make_config
from micro3diff.training.data import DataConfig
from micro3diff.training.loop import train


def measure(preset: str, size: int, batch: int | None, windows: int, window: int, device: str, tmp: Path,
            tag: str = "") -> dict:
    """images/s over ``windows`` log windows of ``window`` steps, after one warm-up window."""
    vol = tmp / "vol.npy"
    if not vol.exists():
        np.save(vol, (np.random.default_rng(0).random((size, size, size)) < 0.4).astype(np.uint8))
    run = tmp / f"{tag}{preset}_{size}"
    cfg = make_config(DataConfig(paths=(str(vol),), image_size=size, axis="all"), preset, batch=batch,
                      steps=(windows + 1) * window, log_every=window, save_every=10**9)
    train(cfg, run, device=device, progress=False)
    rows = (run / "log.csv").read_text().splitlines()[2:]  # header, warm-up window
    rates = [float(r.split(",")[4]) for r in rows]
    return {"preset": preset, "image_size": size, "batch": cfg.batch, "unet": dataclasses.asdict(cfg.unet),
            "params": sum(p.numel() for p in UNet(cfg.unet).parameters()),
            "steps_per_window": window, "images_per_s": rates, "images_per_s_median": statistics.median(rates),
            "steps_per_s_median": statistics.median(rates) / cfg.batch}


def main() -> None:
    ap = _bench.parser(__doc__, out="train_throughput_<device>.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, help="per-step batch (default: the preset's)")
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                    help="CPU thread counts to try")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window", type=int, default=5, help="steps per measured window")
    args = ap.parse_args()
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for preset in args.presets:
                r = measure(preset, args.size, args.batch, args.windows, args.window, args.device,
                            Path(tmp), f"t{threads}_")
                r["threads"] = threads
                results.append(r)
                print(f"{preset:>6} {args.size}x{args.size} batch {r['batch']:>3} threads {threads}: "
                      f"{r['images_per_s_median']:.1f} images/s ({r['steps_per_s_median']:.2f} steps/s)")
    _bench.write_result(args.out or _bench.RESULTS / f"train_throughput_{device.type}.json", {
        "benchmark": "train_throughput",
        "note": "median images/s of the training loop's log windows after a warm-up window; a shared machine "
                "makes CPU numbers noisy (see load_average_1_5_15min)",
        "results": results,
    }, device, __file__)


if __name__ == "__main__":
    main()
