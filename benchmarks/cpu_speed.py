"""CPU speed of the U-Net against this machine's fp32 matmul ceiling, reference vs fast path, in one run.

Per U-Net (each preset of ``--presets``, and each shipped model's own, from its training header): forward
GFLOP/s (batch 32 of 64^2, no grad) and training images/s + GFLOP/s (forward + backward + AdamW, batch 16 of
48^2), reference (contiguous NCHW, eager PyTorch) vs fast (channels_last; the forward also with the U-Net's
inference fusions, ``unet.set_fused``; training has none: autograd takes the reference ops), on 1 and 2
threads, each beside the same thread count's fp32 matmul GFLOP/s (1024^2). FLOPs come from
torch.utils.flop_counter on the reference path (a training step counts forward + backward): the model's FLOPs,
so both paths' GFLOP/s are the model's work per second (the fast forward's Winograd convolutions,
``micro3diff::conv3x3``, do about 1/4 of the multiply-adds for the same output, so it can pass the ceiling).
``shipped`` names the U-Net of each shipped model: its preset, with ``--model-dim D`` where it was trained at
another width.

Then ``m3d sample MODEL --size 64 --preset preview`` wall seconds with --no-fast / --fast for each of
``--sample-models``, interleaved repeats, median. ``--compile PRESET``: torch.compile (inductor, CPU) of the
fast path's forward, its compile seconds beside the eager forward, to see whether it pays back within one
``m3d sample`` run. Both paths run with micro3diff's THP_MEM_ALLOC_ENABLE (recorded), as ``m3d`` does.
Writes benchmarks/results/cpu_speed.json.

  PYTHONPATH=. python benchmarks/cpu_speed.py --note "idle machine"
"""
from __future__ import annotations

import os
import tempfile
import time

import micro3diff  # noqa: F401  (before torch, as in `m3d`: its transparent-huge-page setting applies)
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import _bench
from micro3diff.diffusion.unet import UNET_PRESETS, UNet, UNetConfig, set_fused
from micro3diff.api import list_models
from micro3diff.io.checkpoint import read_config, resolve


def _best(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls (after one warm-up), seconds."""
    return _bench.interleaved({"fn": fn}, repeats)["fn"].best


def matmul_gflops(repeats: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / _best(lambda: a @ b, repeats * 4) / 1e9


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _forward_inputs(unet: UNetConfig, fast: bool) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The U-Net (eval) and a batch of 32 64^2 images with timesteps, channels_last when ``fast``."""
    model = UNet(unet).eval()
    x, t = torch.randn(32, 1, 64, 64), torch.randint(0, 1000, (32,))
    if fast:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        set_fused(model, True)
    return model, x, t


def forward_gflops(unet: UNetConfig, fast: bool, repeats: int) -> dict:
    model, x, t = _forward_inputs(unet, fast)

    def run():
        with torch.no_grad():
            model(x, t)
    reference = _forward_inputs(unet, False)[0]
    with torch.no_grad():
        flops = _flops(lambda: reference(x.contiguous(), t))  # the model's FLOPs, whichever path runs
    sec = _best(run, repeats)
    return {"gflop_per_image": flops / 32 / 1e9, "gflops": flops / sec / 1e9, "seconds": sec}


def compiled_forward(preset: str, repeats: int) -> dict:
    """torch.compile of the fast path's forward: compile seconds (first call), then eager vs compiled, interleaved."""
    model, x, t = _forward_inputs(UNET_PRESETS[preset], True)
    compiled = torch.compile(model)
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled(x, t)
        compile_s = time.perf_counter() - t0
        runs = _bench.interleaved({"eager": lambda: model(x, t), "compiled": lambda: compiled(x, t)}, repeats)
    best = {k: r.best for k, r in runs.items()}
    return {"preset": preset, "batch": 32, "compile_seconds": compile_s, "forward_seconds": best,
            "speedup": best["eager"] / best["compiled"],
            "break_even_forwards": compile_s / max(best["eager"] - best["compiled"], 1e-9)
            if best["compiled"] < best["eager"] else None}


def train_speed(unet: UNetConfig, fast: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    model = UNet(unet)
    x, t = torch.randn(16, 1, 48, 48), torch.randint(0, 1000, (16,))
    if fast:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)

    def step():
        loss = F.mse_loss(model(x, t), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    flops = _flops(step)
    sec = _best(step, repeats)
    return {"images_per_s": 16 / sec, "gflops": flops / sec / 1e9, "seconds": sec}


def shipped_unets() -> dict[str, tuple[str, UNetConfig]]:
    """{shipped model: (its U-Net's label, config)}, from the preset and U-Net its training header records."""
    out = {}
    for name in list_models():
        header = read_config(resolve(name))
        unet = UNetConfig.from_dict(header["unet"])
        out[name] = (_bench.unet_label(header["training"]["preset"], unet), unet)
    return out


def sample(model: str, fast: bool, threads: int) -> None:
    """``m3d sample MODEL --size 64 --preset preview`` in a subprocess, --fast or --no-fast."""
    with tempfile.TemporaryDirectory() as out:
        _bench.run_m3d("sample", model, "--size", "64", "--preset", "preview", "--device", "cpu", "--format", "npy",
                       "-o", out, "--threads", threads, "--fast" if fast else "--no-fast", capture_output=True)


def main() -> None:
    p = _bench.parser(__doc__)
    p.add_argument("--presets", default="tiny,cpu,small")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sample-repeats", type=int, default=3)
    p.add_argument("--sample-threads", type=int, default=2)
    p.add_argument("--sample-models", default="spheres,polycrystal,carbonate", help="shipped models timed end to end")
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--compile", metavar="PRESET", help="also time torch.compile of this preset (1 thread)")
    p.add_argument("--smoke", action="store_true", help="tiny run for the tests (no sampling)")
    a = p.parse_args()
    shipped = shipped_unets()
    unets = {name: UNET_PRESETS[name] for name in a.presets.split(",")} | dict(shipped.values())
    rows = []
    for threads in [int(v) for v in a.threads.split(",")]:
        torch.set_num_threads(threads)
        for label, unet in unets.items():
            for fast in (False, True):
                ceiling = matmul_gflops(a.repeats)
                fwd, trn = forward_gflops(unet, fast, a.repeats), train_speed(unet, fast, a.repeats)
                rows.append({"threads": threads, "unet": label, "path": "fast" if fast else "reference",
                             "matmul_gflops": ceiling, "forward": fwd, "train": trn,
                             "forward_over_ceiling": fwd["gflops"] / ceiling,
                             "train_over_ceiling": trn["gflops"] / ceiling})
                print(f"{threads} thr {label:5s} {rows[-1]['path']:9s}: matmul {ceiling:.0f}, forward "
                      f"{fwd['gflops']:.0f} GFLOP/s ({rows[-1]['forward_over_ceiling']:.2f}), train "
                      f"{trn['images_per_s']:.0f} img/s {trn['gflops']:.0f} GFLOP/s ({rows[-1]['train_over_ceiling']:.2f})",
                      flush=True)
    compiled = None
    if a.compile:
        torch.set_num_threads(1)
        compiled = compiled_forward(a.compile, a.repeats)
        print(f"torch.compile {a.compile}: {compiled['compile_seconds']:.0f} s to compile, forward x"
              f"{compiled['speedup']:.2f}", flush=True)
    if a.smoke:
        print("smoke: no results written")
        return
    sampling = {}
    for model in a.sample_models.split(","):
        runs = _bench.interleaved({"reference": lambda: sample(model, False, a.sample_threads),
                                   "fast": lambda: sample(model, True, a.sample_threads)}, a.sample_repeats,
                                  warmup=False)
        med = {k: r.median for k, r in runs.items()}
        sampling[model] = {"command": f"m3d sample {model} --size 64 --preset preview --threads "
                                      f"{a.sample_threads} --no-fast|--fast",
                           "seconds": {k: r.seconds for k, r in runs.items()}, "median": med,
                           "speedup": med["reference"] / med["fast"]}
        print(f"m3d sample {model} preview 64^3: reference {med['reference']:.1f} s, fast {med['fast']:.1f} s, "
              f"x{sampling[model]['speedup']:.2f}", flush=True)
    labels = {m: label for m, (label, _) in shipped.items()}
    _bench.write_result(_bench.RESULTS / "cpu_speed.json", {"note": a.note, "shipped": labels,
                                                            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                                                            "unet": rows, "compile": compiled, "sample": sampling},
                        "cpu", __file__)


if __name__ == "__main__":
    main()
