"""``m3d synth`` as a function: the kinds, their options (CLI names -> generator parameters), the memory check,
and the output with its JSON sidecar (parameters, seed, voxel size, stored values, achieved statistics)."""
from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import numpy as np

from ..checks import number, require_memory, writable_outputs
from ..errors import UserError
from ..io.arrays import ARRAY_SUFFIXES, write_phases
from ..io.files import provenance, write_json
from . import generators

# Peak working memory per voxel, measured (peak RSS over the bare import, `m3d synth KIND --size 96` and 160):
# polycrystal 45-56 B, the others 8-12 B; with headroom.
BYTES_PER_VOXEL = {"polycrystal": 64}
DEFAULT_BYTES_PER_VOXEL = 16

# kind -> (generator name in micro3diff.synth.generators, {CLI option: generator parameter}, options that take a list)
_SIZES = {"diameter": "diameter_mean", "diameter_sd": "diameter_sd", "volume_fraction": "volume_fraction"}
KINDS = {
    "spheres": ("spheres", {**_SIZES, "periodic": "periodic"}, ()),
    "multiphase": ("multiphase", {**_SIZES, "periodic": "periodic"}, tuple(_SIZES)),
    "polycrystal": ("polycrystal", {"grain_sizes": "grain_sizes", "periodic": "periodic"}, ("grain_sizes",)),
    "overlapping-spheres": (
        "overlapping_spheres",
        {"radius": "radius", "volume_fraction": "matrix_fraction", "periodic": "periodic"},
        (),
    ),
    "ellipsoids": (
        "ellipsoids",
        {"semi_axes": "semi_axes", "volume_fraction": "volume_fraction", "overlapping": "overlapping",
         "periodic": "periodic"},
        ("semi_axes",),
    ),
}


def _numbers(option: str, text: str, integer: bool = False) -> tuple:
    """'300,64,64' / '300x64x64' / '300 64 64' -> a tuple of numbers; UserError otherwise."""
    parts = text.replace("x", ",").replace(" ", ",").split(",")
    try:
        numbers = tuple((int if integer else float)(p) for p in parts if p)
    except ValueError:
        numbers = ()
    if not numbers or not all(map(math.isfinite, numbers)):
        raise UserError(f"--{option.replace('_', '-')}: expected comma-separated finite numbers, got {text!r}")
    return numbers


def write_synth(kind: str, out: str, *, shape: str | None = None, size: int | None = None, count: int | None = None,
                seed: int | None = None, voxel_size: tuple[float, float, float] | None = None, unit: str | None = None,
                **options) -> str:
    """Generate ``kind`` with the CLI's ``options`` (None: the generator's default; lists as "a,b") and write it to
    ``out`` with the sidecar ``out.json``; ``seed`` None: fresh, recorded. Returns the line to print."""
    path = Path(out)
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise UserError(f"{path}: unsupported output type {path.suffix!r} (use .npy, .tif or .png)")
    writable_outputs([path, path.with_name(path.name + ".json")])
    name, allowed, lists = KINDS[kind]
    kwargs = {}
    for option, value in options.items():
        if value is None:
            continue
        if option not in allowed:
            raise UserError(f"--{option.replace('_', '-')} does not apply to {kind}")
        if isinstance(value, float):
            number(f"--{option}", value)
        if isinstance(value, str):
            value = _numbers(option, value)
            if option not in lists:
                if len(value) != 1:
                    raise UserError(f"--{option.replace('_', '-')} takes one number for {kind}")
                value = value[0]
        kwargs[allowed[option]] = value
    if shape is not None and size is not None:
        raise UserError("give --shape or --size, not both")
    if size is not None:
        kwargs["shape"] = (size,) * (2 if count else 3)
    elif shape is not None:
        kwargs["shape"] = _numbers("shape", shape, integer=True)
    if count is not None:
        kwargs.setdefault("shape", (64, 64))
    for option, value in (("--size", size), ("--count", count), *(("--shape", v) for v in kwargs.get("shape", ()))):
        number(option, value, lo=1)
    number("--seed", seed, lo=0)
    voxels = math.prod(kwargs.get("shape", ())) * (count or 1)  # the kinds' default shapes are small
    require_memory(BYTES_PER_VOXEL.get(kind, DEFAULT_BYTES_PER_VOXEL) * voxels, f"{voxels:,} voxels",
                   hint="use a smaller --size, --shape or --count")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    generate = getattr(generators, name)
    start = time.perf_counter()
    if count is None:
        made = generate(seed=seed, **kwargs)
    else:
        made = generators.image_stack(generate, count, seed=seed, **kwargs)
    elapsed = time.perf_counter() - start
    if path.suffix.lower() == ".png" and made.array.ndim != 2:
        raise UserError(f"{path}: .png holds one 2D image; use .npy or .tif for volumes and stacks")
    unit = unit or "um"
    values = write_phases(path, made.array, voxel_size=voxel_size, unit=unit)
    parameters = inspect.signature(generate).bind_partial(**kwargs)
    parameters.apply_defaults()
    write_json(path.with_name(path.name + ".json"), {
        "kind": kind,
        "parameters": {**{k: v for k, v in parameters.arguments.items() if k != "seed"}, "count": count},
        "seed": seed,
        "voxel_size": voxel_size and list(voxel_size),
        "unit": unit if voxel_size else None,
        "values": values,
        "statistics": generators.describe(made),
        "seconds": round(elapsed, 3),
        "provenance": provenance(),
    })
    return f"wrote {path} {tuple(made.array.shape)} in {elapsed:.2f} s"
