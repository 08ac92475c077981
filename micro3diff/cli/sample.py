"""``m3d sample``: 3D volumes from a trained 2D model by multi-plane harmonized sampling.

Per volume i, any of ``<stem>_<i>.tif`` (ImageJ z-stack (D, H, W) with voxel size; two phases as 0/255),
``.npy`` (uint8 phases) and ``.vti`` (VTK, spacing = voxel size), ``<stem>_<i>_ortho.png`` (central yz | xz | xy
slices, labelled) and, written last, the sidecar ``<stem>_<i>.json`` (settings, voxel size, TIFF value mapping).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..diffusion import sampler
from ..checks import machine_memory, number, require_memory, writable_outputs
from ..errors import UserError
from ..axes import PLANES
from ._common import pick_device, progress_bar, quiet_option, say, set_threads, user_errors, voxel_size_option

FORMATS = ("tif", "vti", "npy")


def _rank_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as set by torchrun, (0, 1) otherwise."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers") from None
    if not 0 <= rank < world:
        raise UserError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return rank, world


def _plane_names(model: str | None, specs: tuple[str, ...]) -> dict[str, str]:
    """{plane: checkpoint} from MODEL and ``--models PLANE=MODEL[,PLANE=MODEL...]`` (repeatable)."""
    planes: dict[str, str] = {}
    for item in (part for spec in specs for part in spec.split(",") if part):
        plane, sep, name = item.partition("=")
        if not sep or not name or plane not in PLANES or plane in planes:
            raise UserError(f"bad --models entry {item!r}: use PLANE=MODEL once per plane, PLANE in "
                            f"{', '.join(PLANES)}")
        planes[plane] = name
    missing = [p for p in PLANES if p not in planes]
    if missing and model is None:
        raise UserError(f"give MODEL or --models for every plane (missing {', '.join(missing)})")
    return {p: planes.get(p, model) for p in PLANES}


def _formats(spec: str) -> list[str]:
    """--format: a comma-separated set of tif, vti, npy ("both" = tif,npy) -> file suffixes in FORMATS order."""
    names = {n for part in spec.split(",") if part for n in (("tif", "npy") if part == "both" else (part,))}
    if not names or names - set(FORMATS):
        raise UserError(f"--format takes a comma-separated set of {', '.join(FORMATS)} (or both), got {spec!r}")
    return [f".{n}" for n in FORMATS if n in names]


def _volume_fraction(spec: str) -> str | list[float]:
    """--volume-fraction: data / auto / off as they are, else comma-separated numbers."""
    if spec in ("data", "auto", "off"):
        return spec
    try:
        return [float(v) for v in spec.split(",")]
    except ValueError:
        raise UserError(f"--volume-fraction must be data, off or comma-separated numbers, got {spec!r}") from None


def _check_memory(shape: tuple[int, int, int], unets: list, max_batch: int | None, device) -> None:
    """UserError before sampling if the volume and one network forward of ``max_batch`` slices cannot fit."""
    D, H, W = shape
    volume = 6 * 4 * max(u.channels for u in unets) * D * H * W  # x, noise, eps, a rotated copy, result, labels
    per_slice = max(u.forward_bytes(h, w) for u in unets for h, w in ((H, W), (W, D), (D, H)))
    slices = min(max_batch or max(shape), max(shape))
    fit = (machine_memory(device) - volume) // per_slice
    hint = f"--max-batch {fit} would fit" if 1 <= fit < slices else "use a smaller --size or --shape"
    require_memory(volume + slices * per_slice, f"sampling a {D}x{H}x{W} volume", device, hint)


def _changed(sidecar: Path, recipe: dict) -> str | None:
    """The first setting in which an existing volume's sidecar differs from ``recipe`` (None: none)."""
    try:
        old = json.loads(sidecar.read_text())
        old["models"] = {p: m["sha256"] for p, m in old["models"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "its sidecar is unreadable"
    return next((f"{k} was {old.get(k)}, now {v}" for k, v in recipe.items() if old.get(k) != v), None)


@click.command()
@click.argument("model", required=False)
@click.option("--models", "plane_specs", multiple=True, metavar="PLANE=MODEL",
              help="Per-plane model (yz, xz, xy) for anisotropic materials; repeat or comma-separate. "
                   "Planes not given use MODEL.")
@click.option("--size", type=int, help="Cubic volume side (default: the model's training image size, else 64).")
@click.option("--shape", type=int, nargs=3, metavar="D H W",
              help="Non-cubic volume (sides along D, H, W; yz slices are at fixed D).")
@click.option("--count", type=int, default=1, show_default=True, help="Number of volumes.")
@click.option("--preset", type=click.Choice(list(sampler.PRESETS)), default="fast", show_default=True,
              help="Steps / harmonization settings; --steps, --harmonize, --method, --eta override it.")
@click.option("--steps", type=int, help="Respaced reverse steps (1..T).")
@click.option("--harmonize", "n_harmonize", type=int, help="Denoiser calls per step (n_h).")
@click.option("--method", type=click.Choice(["ddpm", "ddim"]))
@click.option("--eta", type=float, help="DDIM eta.")
@click.option("--seed", type=int, default=0, show_default=True, help="Volume i uses seed + i.")
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK if available, else cpu).")
@click.option("--max-batch", type=int, help="Slices per network forward (default: all of a plane).")
@click.option("--prior", "prior_mode", type=click.Choice(["standard", "data"]), default="standard", show_default=True,
              help="Start x_T from N(0, I) (standard, Algorithm 1) or from q(x_T) built on the training data's "
                   "phase fractions (data; see benchmarks/results/paper_cases.md for when it helps).")
@click.option("--periodic", is_flag=True, help="Circular padding: a periodic volume.")
@click.option("--fast/--no-fast", default=True, show_default=True,
              help="Fast path: channels_last (CPU and CUDA), bf16 autocast and a CUDA graph (CUDA); --no-fast: the "
                   "fp32 reference.")
@click.option("--volume-fraction", "vf_spec", default="auto", show_default=True,
              help="Steer every denoiser call so the predicted x0 has these phase fractions: 'data' (the training "
                   "data's, from the checkpoint), 'off', numbers (one for two phases, K summing to 1 for K), or "
                   "'auto' (data when the checkpoint records them, else off).")
@click.option("--anchor", "anchor_specs", multiple=True, metavar="AXIS=INDEX:FILE",
              help="A measured slice every volume must contain exactly (repeatable), AXIS x, y or z = array axis D, "
                   "H or W: e.g. x=0:face.tif (a D-slice, H x W). Phases as the training images'.")
@click.option("--anchors", "stack_spec", metavar="AXIS:FILE",
              help="Serial sections: slice j of the stack FILE at index j * --every along AXIS.")
@click.option("--every", type=int, help="Section spacing of --anchors, in voxels.")
@click.option("--threads", type=int, help="CPU threads for torch (default: torch's choice).")
@click.option("--format", "fmt", default="tif", show_default=True, metavar="tif,vti,npy",
              help="Any comma-separated set: tif (ImageJ stack, Fiji), vti (VTK image data, ParaView), npy; "
                   "both = tif,npy.")
@voxel_size_option(" (default: the checkpoint's, if its training data recorded one)")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("samples"), show_default=True)
@click.option("--stem", help="File name stem (default: the checkpoint's name).")
@click.option("--overwrite", is_flag=True, help="Redo volumes whose files already exist (default: skip them).")
@quiet_option
@user_errors
def sample(model: str | None, plane_specs: tuple[str, ...], size: int | None, shape: tuple[int, ...],
           count: int, preset: str, steps: int | None, n_harmonize: int | None, method: str | None,
           eta: float | None, seed: int, device: str | None, max_batch: int | None, prior_mode: str,
           periodic: bool, fast: bool, vf_spec: str, anchor_specs: tuple[str, ...], stack_spec: str | None,
           every: int | None, threads: int | None, fmt: str,
           voxel_size: tuple[float, float, float] | None, unit: str | None, out_dir: Path, stem: str | None, overwrite: bool) -> None:
    """Generate COUNT volumes from MODEL (a checkpoint file or a shipped model name).

    Under `torchrun --nproc_per_node N m3d sample ...` rank r of N makes volumes r, r + N, ...; volume i
    always uses seed + i, so its content does not depend on N, on the rank or on what was skipped.
    Interrupted runs resume: volumes whose files all exist are skipped.
    """
    import torch

    from ..diffusion.anchors import Anchors, describe, from_cli
    from ..api import plane_checkpoints, resolve_volume_fraction
    from ..io.files import provenance, write_json
    from ..io.arrays import voxel_size3, write_phases
    from ..io.pictures import write_orthoslices
    from ..diffusion.schedule import NoiseSchedule

    rank, world = _rank_world()
    set_threads(threads)
    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if size is not None and shape:
        raise UserError("give --size or --shape, not both")
    for name, value in (("--size", size), *(("--shape", side) for side in shape or ())):
        number(name, value, lo=1)
    number("--eta", eta, lo=0)
    if stem is not None and (Path(stem).name != stem or stem in ("", ".", "..")):
        raise UserError(f"--stem must be a plain file name without a folder, got {stem!r}")
    settings = sampler.sampler_settings(preset, steps=steps, n_harmonize=n_harmonize, method=method, eta=eta)
    names = _plane_names(model, plane_specs)
    if device is None and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    dev = pick_device(device)
    plane_ckpts = plane_checkpoints(names, dev)
    first = plane_ckpts["yz"]
    if voxel_size is None:
        voxel_size = voxel_size3(first.data.get("voxel_size"))
    unit = unit or first.data.get("unit", "um")
    shape = tuple(shape) if shape else (size if size is not None else int(first.data.get("image_size", 64)),) * 3
    _check_memory(shape, [c.unet for c in plane_ckpts.values()], max_batch, dev)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out_dir} is not writable")
    stem = stem or Path(first.path).stem
    schedule = NoiseSchedule(first.schedule)
    suffixes = _formats(fmt)
    models = {p: c.model for p, c in plane_ckpts.items()}
    options = sampler.SamplerOptions.fast(dev) if fast else None
    prior = first.prior if prior_mode == "data" else None
    volume_fraction = resolve_volume_fraction(_volume_fraction(vf_spec), first)
    anchor_list = from_cli(anchor_specs, stack_spec, every, first.data)
    anchors = Anchors(anchor_list, shape, first.unet.channels) if anchor_list else None

    todo = range(rank, count, world)
    bar = progress_bar(total=len(todo) * settings.steps, desc="sampling", unit="step", leave=False)
    for i in todo:
        base = out_dir / f"{stem}_{i}"
        arrays = [base.with_name(base.name + s) for s in suffixes]
        ortho, sidecar = base.with_name(base.name + "_ortho.png"), base.with_name(base.name + ".json")
        recipe = {"seed": seed + i, "shape": list(shape), "periodic": periodic,
                  "prior": prior_mode if prior else "standard",
                  "volume_fraction": list(volume_fraction) if volume_fraction else None,
                  "anchors": describe(anchor_list) or None,
                  **{f: getattr(settings, f) for f in ("steps", "n_harmonize", "method", "eta")},
                  "models": {p: c.sha256 for p, c in plane_ckpts.items()}}
        if not overwrite and all(p.exists() for p in [*arrays, ortho, sidecar]):
            changed = _changed(sidecar, recipe)
            if changed:
                raise UserError(f"{sidecar} was made with other settings ({changed}); use --overwrite to redo it "
                                f"or another -o")
            say(f"skip {sidecar.name} (exists; --overwrite to redo)")
            bar.total -= settings.steps
            continue
        writable_outputs([*arrays, ortho, sidecar])
        bar.set_postfix_str(f"volume {i}")
        res = sampler.sample_volume(models, schedule, shape, 1, preset=settings, seed=seed + i, device=dev,
                                    max_batch=max_batch, periodic=periodic, options=options, prior=prior,
                                    volume_fraction=volume_fraction, anchors=anchors, callback=lambda rec: bar.update())
        if not torch.isfinite(res.volume).all():
            raise UserError(f"volume {i} came out with NaN or infinite values; nothing written for it")
        phases, n_phases = res.phases[0].cpu().numpy(), max(2, res.volume.shape[1])
        values = {p.name: write_phases(p, phases, n_phases, voxel_size=voxel_size, unit=unit) for p in arrays}
        write_orthoslices(ortho, phases, n_phases, voxel_size=voxel_size, unit=unit)
        write_json(sidecar, {
            **recipe, "volume": i, "base_seed": seed, "count": count, "channels": res.volume.shape[1],
            "voxel_size": voxel_size and list(voxel_size), "unit": unit if voxel_size else None, "values": values,
            "threads": torch.get_num_threads(), "preset": preset, "nfe": res.nfe, "seconds": res.seconds, "seconds_network": res.seconds_network,
            "models": {p: c.describe() for p, c in plane_ckpts.items()}, "schedule": schedule.to_dict(),
            "device": str(dev), "max_batch": max_batch, "rank": rank, "world_size": world,
            "fast": options.to_dict() if options else None,
            "files": [p.name for p in [*arrays, ortho]], "command": sys.argv, "versions": provenance(),
        })
        say(f"wrote {base.name} ({res.seconds:.1f} s, {res.nfe} network calls)")
