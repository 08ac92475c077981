"""``m3d synth``: write a synthetic microstructure (volume or stack of 2D images) and its JSON sidecar."""
from __future__ import annotations

import inspect
import math
import time
from pathlib import Path

import click

from ._common import quiet_option, say, user_errors, voxel_size_option

# Peak working memory per voxel, measured (peak RSS over the bare import, `m3d synth KIND --size 96` and 160):
# polycrystal 45-56 B, the others 8-12 B; with headroom.
BYTES_PER_VOXEL = {"polycrystal": 64}
DEFAULT_BYTES_PER_VOXEL = 16

# kind -> (generator name in micro3diff.synth, {CLI option: generator parameter}, options that take a list)
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
    from ..errors import UserError

    parts = text.replace("x", ",").replace(" ", ",").split(",")
    try:
        numbers = tuple((int if integer else float)(p) for p in parts if p)
    except ValueError:
        numbers = ()
    if not numbers or not all(map(math.isfinite, numbers)):
        raise UserError(f"--{option.replace('_', '-')}: expected comma-separated finite numbers, got {text!r}")
    return numbers


@click.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Output .npy, .tif/.tiff (ImageJ stack, two phases as 0/255), .vti (or .png for one 2D image).")
@click.option("--shape", help="Array shape: D,H,W for a volume or H,W for images (default: the kind's).")
@click.option("--size", type=int, help="Cube side (or square side with --count) instead of --shape.")
@click.option("--count", type=int,
              help="Write a stack of COUNT independent 2D images (N, H, W), 64 x 64 unless --shape H,W.")
@click.option("--seed", type=int, help="Random seed (default: fresh, recorded in the sidecar).")
@click.option("--volume-fraction",
              help="Target fraction of phase 1 (overlapping-spheres: the matrix; multiphase: one per phase, a,b).")
@click.option("--diameter", help="Mean sphere diameter in voxels (multiphase: one per phase).")
@click.option("--diameter-sd", help="Standard deviation of the diameter (multiphase: one per phase).")
@click.option("--radius", type=float, help="overlapping-spheres: sphere radius in voxels.")
@click.option("--grain-sizes", help="polycrystal: grain equivalent diameters, e.g. 6,9,12.")
@click.option("--semi-axes", help="ellipsoids: semi-axes along D,H,W (or H,W), e.g. 12,4,4.")
@click.option("--overlapping/--no-overlapping", default=None, help="ellipsoids: Boolean model or non-overlapping.")
@click.option("--periodic/--no-periodic", default=None, help="Wrap around the box (default: periodic).")
@voxel_size_option(" (recorded in the TIFF / .vti and the sidecar)")
@quiet_option
@user_errors
def synth(
    kind: str, out: str, shape: str | None, size: int | None, count: int | None, seed: int | None,
    voxel_size: tuple[float, float, float] | None, unit: str | None, **options
) -> None:
    """Generate a synthetic microstructure of KIND and write it with a JSON sidecar OUT.json.

    \b
    Paper case I:  m3d synth spheres -o spheres.tif            (300 x 64 x 64, d = 15 +- 4, 20 %)
    Paper case II: m3d synth polycrystal --count 300 -o grains.tif   (300 images 64 x 64)
    """
    import numpy as np

    from .. import synth as api
    from ..checks import number, require_memory
    from ..errors import UserError
    from ..checks import writable_outputs
    from ..io.arrays import ARRAY_SUFFIXES, write_phases
    from ..io.files import provenance, write_json

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
    generate = getattr(api, name)
    start = time.perf_counter()
    if count is None:
        made = generate(seed=seed, **kwargs)
    else:
        made = api.image_stack(generate, count, seed=seed, **kwargs)
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
        "statistics": api.describe(made),
        "seconds": round(elapsed, 3),
        "provenance": provenance(),
    })
    say(f"wrote {path} {tuple(made.array.shape)} in {elapsed:.2f} s")
