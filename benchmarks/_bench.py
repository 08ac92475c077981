"""Plumbing shared by the benchmark scripts: paths, the m3d CLI in a subprocess, device facts, interleaved
A-vs-B timing, and result JSON written atomically with the device, the command, the date and the versions.

Scripts run as ``python benchmarks/<script>.py`` import it as ``_bench`` (their folder is on sys.path).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CARBONATE = REPO.parent / "shared" / "data" / "li2018" / "carbonate_resized.npy"  # read at run time, never copied
sys.path.append(str(REPO))  # the source tree, only if micro3diff is not installed

from micro3diff.diffusion.unet import UNET_PRESETS, UNet, UNetConfig  # noqa: E402
from micro3diff.io.files import device_name, provenance, write_json  # noqa: E402

M3D = [sys.executable, "-c", "from micro3diff.cli import main; main()"]


def parser(doc: str, out: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose help is ``doc`` as written; with ``out`` (the default result file under
    benchmarks/results/) an ``--out PATH`` option, default None."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out:
        p.add_argument("--out", type=Path, help=f"result JSON (default: benchmarks/results/{out})")
    return p


def m3d_env(threads: int | None = None) -> dict[str, str]:
    """The environment of an m3d subprocess: this checkout first on PYTHONPATH, OMP_NUM_THREADS=threads if given."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_m3d(*args: Any, threads: int | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``m3d ARGS`` (this checkout's CLI) from the repository root; raise if it fails."""
    return subprocess.run([*M3D, *map(str, args)], check=True, env=m3d_env(threads), cwd=REPO, **kwargs)


def device_label(device: torch.device | str = "cpu") -> str:
    """The GPU's name, or '<CPU model>, <n> cores'."""
    device = torch.device(device)
    return device_name(device) if device.type == "cuda" else f"{device_name(device)}, {os.cpu_count()} cores"


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that reruns ``script`` from the repository root (argv: default sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else argv
    return "PYTHONPATH=. python " + shlex.join([f"benchmarks/{Path(script).name}", *args])


def write_result(path: Path, doc: dict, device: torch.device | str, script: str, argv: list[str] | None = None) -> None:
    """Write ``doc`` to ``path`` atomically, with the device, the command, the date, the versions and the load."""
    facts = provenance()
    write_json(path, {**doc, "device": device_label(device), "command": command(script, argv), "date": facts["date"],
                      "versions": facts, "load_average_1_5_15min": os.getloadavg()})
    print(f"wrote {path}", flush=True)


@dataclasses.dataclass
class Timing:
    """Seconds of each timed call of one function, and the return value of the fastest call."""

    seconds: list[float] = dataclasses.field(default_factory=list)
    output: Any = None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[float, Any]:
    """(seconds, return value) of one call; on CUDA timed by events around it."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int | dict[str, int], *, warmup: bool = True,
                budget: float = float("inf"), device: torch.device | str = "cpu") -> dict[str, Timing]:
    """Time every function ``repeats`` times (one count for all, or one per name), runs interleaved (A, B, A, B,
    ...) so that load from other processes hits all alike; ``warmup``: one untimed call of each first; a function
    stops repeating once its runs add up to ``budget`` seconds."""
    counts = repeats if isinstance(repeats, dict) else dict.fromkeys(fns, repeats)
    if warmup:
        for fn in fns.values():
            fn()
    runs = {name: Timing() for name in fns}
    for i in range(max(counts.values())):
        for name, fn in fns.items():
            r = runs[name]
            if i < counts[name] and sum(r.seconds) < budget:
                seconds, out = timed(fn, device)
                if not r.seconds or seconds < r.best:
                    r.output = out
                r.seconds.append(seconds)
    return runs


@contextlib.contextmanager
def ops_mode(mode: str):
    """``M3D_OPS=mode`` (auto, compiled, reference) inside the block."""
    old = os.environ.get("M3D_OPS")
    os.environ["M3D_OPS"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("M3D_OPS")
        else:
            os.environ["M3D_OPS"] = old


def random_unet(preset: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A U-Net of ``preset`` with seed-0 random weights, in eval mode (its zero-initialised output layer drawn
    too, so that eps is not 0)."""
    torch.manual_seed(0)
    model = UNet(UNET_PRESETS[preset])
    torch.nn.init.normal_(model.out_conv.weight, std=0.02)
    return model.to(device).eval()


def unet_label(preset: str, unet: UNetConfig) -> str:
    """``preset``, or ``"PRESET --model-dim D"`` for the preset at another width (``m3d train --model-dim``)."""
    base = dataclasses.replace(UNET_PRESETS[preset], channels=unet.channels)
    if unet == dataclasses.replace(base, dim=unet.dim):
        return preset if unet.dim == base.dim else f"{preset} --model-dim {unet.dim}"
    raise SystemExit(f"a U-Net is neither the {preset!r} preset nor it at another width: {unet}")
