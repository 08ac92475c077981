"""Sampling from checkpoints: per-plane checkpoints that agree, the run's ``SamplerSettings``, ``m3d sample`` as a
function (``write_samples``: volumes shared over torchrun ranks, their files, skip and resume, sidecars) and
``m3d sample2d`` (``write_images``).

Files of volume i: any of ``<stem>_<i>.tif`` (ImageJ z-stack (D, H, W) with voxel size; two phases as 0/255),
``.npy`` (uint8 phases) and ``.vti`` (VTK, spacing = voxel size), ``<stem>_<i>_ortho.png`` (central yz | xz | xy
slices, labelled) and, written last, the sidecar ``<stem>_<i>.json`` (settings, voxel size, TIFF value mapping).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

from .axes import PLANES
from .checks import machine_memory, require_memory, writable_outputs
from .errors import UserError

if TYPE_CHECKING:
    import torch

    from .anchors import Anchor
    from .diffusion.settings import SamplerPreset, SamplerSettings
    from .io.checkpoint import Checkpoint

ModelLike = Union[str, os.PathLike, "Checkpoint"]
FORMATS = ("tif", "vti", "npy")


def resolve_volume_fraction(spec: str | Sequence[float] | None, ckpt: Checkpoint) -> list[float] | None:
    """Target phase fractions: "data" (the checkpoint's training fractions; UserError if unrecorded), "auto"
    ("data" when recorded, else None), None / "off" (no control) or the numbers themselves."""
    if spec is None or spec == "off" or (spec == "auto" and ckpt.phase_fractions is None):
        return None
    if spec in ("data", "auto"):
        if ckpt.phase_fractions is None:
            raise UserError(f"{ckpt.path} records no training phase fractions; give volume fractions or off")
        return ckpt.phase_fractions
    if isinstance(spec, str):
        raise UserError(f"volume fraction must be data, auto, off or numbers, got {spec!r}")
    return [float(v) for v in spec]


def plane_checkpoints(model: ModelLike | Mapping[str, ModelLike], device: Any = "cpu") -> dict[str, Checkpoint]:
    """{plane: Checkpoint} for one model or {"yz", "xz", "xy"} of them, each file loaded once onto ``device``.

    UserError unless every plane is given and all share one noise schedule.
    """
    from .io.checkpoint import Checkpoint, load_checkpoint

    specs = dict(model) if isinstance(model, Mapping) else dict.fromkeys(PLANES, model)
    if sorted(specs) != sorted(PLANES):
        raise UserError(f"per-plane models need exactly the planes {', '.join(PLANES)}, got {', '.join(specs)}")
    loaded: dict[str, Checkpoint] = {}
    for spec in specs.values():
        if isinstance(spec, Checkpoint):
            spec.model.to(device)
        elif os.fspath(spec) not in loaded:
            loaded[os.fspath(spec)] = load_checkpoint(spec, device)
    ckpts = {p: s if isinstance(s, Checkpoint) else loaded[os.fspath(s)] for p, s in specs.items()}
    if any(c.schedule != ckpts["yz"].schedule for c in ckpts.values()):
        raise UserError("per-plane models were trained with different noise schedules")
    return ckpts


def run_settings(ckpts: dict[str, Checkpoint], shape: tuple[int, int, int], device: torch.device, *,
                 preset: str | SamplerPreset = "auto", prior: str = "standard", fast: bool = True,
                 volume_fraction: str | Sequence[float] | None = "auto", anchors: Sequence[Anchor] = (),
                 **fields: Any) -> SamplerSettings:
    """The ``SamplerSettings`` of a run from checkpoints: ``prior`` "standard" (N(0, I)) or "data" (the first
    checkpoint's q(x_T)), ``fast``: ``SamplerOptions.fast(device)``, ``volume_fraction`` as
    ``resolve_volume_fraction`` or "anchors" (the anchored voxels' fractions), steered with the models' x0-hat
    moments where every model has them; ``preset`` "auto": the setting measured for these weights
    (``settings.recommended_preset``); other fields (steps, n_harmonize, method, eta, seed, max_batch,
    periodic, ...) as ``SamplerSettings.make``."""
    from .anchors import Anchors
    from .diffusion.network import SamplerOptions
    from .diffusion.settings import SamplerSettings

    first = ckpts["yz"]
    if prior not in ("standard", "data"):
        raise UserError(f"prior must be 'standard' or 'data', got {prior!r}")
    anchored = Anchors(anchors, shape, first.unet.channels) if anchors else None
    if isinstance(volume_fraction, str) and volume_fraction == "anchors":  # the anchored voxels' fractions
        if anchored is None:
            raise UserError("volume_fraction='anchors' needs anchors")
        targets = anchored.phase_fractions
    else:
        targets = resolve_volume_fraction(volume_fraction, first)
    moments = {p: c.x0_moments for p, c in ckpts.items()}
    return SamplerSettings.make(preset, device=device, options=SamplerOptions.fast(device) if fast else None,
                                prior=first.prior if prior == "data" else None, volume_fraction=targets,
                                x0_moments=moments if targets and None not in moments.values() else None,
                                anchors=anchored, sha256s=[c.sha256 for c in ckpts.values()], **fields)


def check_memory(shape: tuple[int, int, int], unets: list, max_batch: int | None, device) -> None:
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


def _out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out_dir} is not writable")


def write_samples(models: dict[str, str], out_dir: Path, *, shape: tuple[int, int, int] | None = None,
                  size: int | None = None, count: int = 1, seed: int = 0, device: str | None = None,
                  suffixes: Sequence[str] = (".tif",), stem: str | None = None, overwrite: bool = False,
                  voxel_size: tuple[float, float, float] | None = None, unit: str | None = None,
                  preset: str = "auto", steps: int | None = None, n_harmonize: int | None = None,
                  method: str | None = None, eta: float | None = None, prior: str = "standard",
                  anchor_specs: Sequence[str] = (), stack_spec: str | None = None, every: int | None = None,
                  estimate: bool = False, bar: Any = None, **settings: Any) -> Iterator[str]:
    """``m3d sample``: write volumes rank, rank + world, ... of ``count`` from {plane: checkpoint} ``models``.

    Volume i uses seed + i. Volumes whose files all exist are skipped (UserError if their sidecar records
    other settings) unless ``overwrite``. ``anchor_specs``, ``stack_spec``, ``every``: ``--anchor``, ``--anchors``,
    ``--every`` (``anchors.from_cli``); ``estimate``: also write ``<stem>_estimate``, the anchored volumes'
    voxel-by-voxel best guess (``anchors.point_estimate``; skipped volumes are read back). ``settings``: the
    rest of ``run_settings``'s keywords (fast,
    volume_fraction, max_batch, periodic). ``bar``: a tqdm-like progress bar, one tick per step. Yields one
    line per volume (written or skipped).
    """
    import numpy as np
    import torch

    from .devices import rank_device, rank_world
    from .anchors import describe, from_cli, point_estimate
    from .diffusion.sampler import sample_volume
    from .diffusion.schedule import NoiseSchedule
    from .diffusion.settings import sampler_settings
    from .io.arrays import read_array, voxel_size3, write_phases
    from .io.files import provenance, write_json
    from .io.pictures import write_orthoslices

    rank, world = rank_world()
    dev = rank_device(device)
    ckpts = plane_checkpoints(models, dev)
    cfg = sampler_settings(preset, steps=steps, n_harmonize=n_harmonize, method=method, eta=eta,
                           sha256s=[c.sha256 for c in ckpts.values()])
    first = ckpts["yz"]
    voxel_size = voxel_size if voxel_size is not None else voxel_size3(first.data.get("voxel_size"))
    unit = unit or first.data.get("unit", "um")
    shape = tuple(shape) if shape else (size if size is not None else int(first.data.get("image_size", 64)),) * 3
    check_memory(shape, [c.unet for c in ckpts.values()], settings.get("max_batch"), dev)
    _out_dir(out_dir)
    stem = stem or Path(first.path).stem
    schedule = NoiseSchedule(first.schedule)
    anchors = from_cli(anchor_specs, stack_spec, every, first.data)
    if (settings.get("volume_fraction") == "anchors" or estimate) and not anchors:
        raise UserError(f"{'--estimate' if estimate else '--volume-fraction anchors'} needs --anchor or --anchors")
    if estimate and (count < 3 or first.unet.channels != 1 or world > 1):
        raise UserError("--estimate needs --count >= 3 volumes of a two-phase model in one process (after a torchrun "
                        "run, rerun with --estimate alone: existing volumes are read back)")
    run = run_settings(ckpts, shape, dev, preset=cfg, prior=prior, anchors=anchors, **settings)
    todo, made = range(rank, count, world), {}
    if bar is not None:
        bar.total = len(todo) * cfg.steps
    for i in todo:
        base = out_dir / f"{stem}_{i}"
        arrays = [base.with_name(base.name + s) for s in suffixes]
        ortho, sidecar = base.with_name(base.name + "_ortho.png"), base.with_name(base.name + ".json")
        recipe = {"seed": seed + i, "shape": list(shape), "periodic": run.periodic,
                  "prior": prior if run.prior else "standard",
                  "volume_fraction": list(run.volume_fraction) if run.volume_fraction else None,
                  "volume_fraction_rule": None if not run.volume_fraction else
                  "variance+shift" if run.x0_moments else "shift",
                  "anchors": describe(anchors) or None,
                  **{f: getattr(cfg, f) for f in ("steps", "n_harmonize", "method", "eta")},
                  "models": {p: c.sha256 for p, c in ckpts.items()}}
        if not overwrite and all(p.exists() for p in [*arrays, ortho, sidecar]):
            changed = _changed(sidecar, recipe)
            if changed:
                raise UserError(f"{sidecar} was made with other settings ({changed}); use --overwrite to redo it "
                                f"or another -o")
            if bar is not None:
                bar.total -= cfg.steps
            made[i] = read_array(arrays[0]) if estimate else None
            yield f"skip {sidecar.name} (exists; --overwrite to redo)"
            continue
        writable_outputs([*arrays, ortho, sidecar])
        if bar is not None:
            bar.set_postfix_str(f"volume {i}")
        res = sample_volume({p: c.model for p, c in ckpts.items()}, schedule, shape, 1,
                            dataclasses.replace(run, seed=seed + i),
                            callback=None if bar is None else lambda rec: bar.update())
        if not torch.isfinite(res.volume).all():
            raise UserError(f"volume {i} came out with NaN or infinite values; nothing written for it")
        phases, n_phases = res.phases[0].cpu().numpy(), max(2, res.volume.shape[1])
        made[i] = phases if estimate else None
        values = {p.name: write_phases(p, phases, n_phases, voxel_size=voxel_size, unit=unit) for p in arrays}
        write_orthoslices(ortho, phases, n_phases, voxel_size=voxel_size, unit=unit)
        write_json(sidecar, {
            **recipe, "volume": i, "base_seed": seed, "count": count, "channels": res.volume.shape[1],
            "voxel_size": voxel_size and list(voxel_size), "unit": unit if voxel_size else None, "values": values,
            "threads": torch.get_num_threads(), "preset": preset, "nfe": res.nfe,
            "seconds": res.seconds, "seconds_network": res.seconds_network,
            "models": {p: c.describe() for p, c in ckpts.items()}, "schedule": schedule.to_dict(),
            "device": str(dev), "max_batch": run.max_batch, "rank": rank, "world_size": world,
            "fast": run.options.to_dict() if run.options else None,
            "files": [p.name for p in [*arrays, ortho]], "command": sys.argv, "versions": provenance(),
        })
        yield f"wrote {base.name} ({res.seconds:.1f} s, {res.nfe} network calls)"
    if estimate:
        base, phi = out_dir / f"{stem}_estimate", run.anchors.phase_fractions[0]
        guess = point_estimate(torch.from_numpy(np.stack([made[i] for i in todo])), phi).numpy()
        for path in [base.with_name(base.name + suffix) for suffix in suffixes]:
            write_phases(path, guess, 2, voxel_size=voxel_size, unit=unit)
        write_json(base.with_name(base.name + ".json"), {
            "estimate": f"per-voxel share of the {count} volumes in phase 1, thresholded at the anchors' phase "
                        "fraction (micro3diff.anchors.point_estimate): a best guess, not a realization",
            "volumes": [f"{stem}_{i}" for i in todo], "phase_fraction": phi, "anchors": describe(anchors),
            "command": sys.argv, "versions": provenance()})
        yield f"wrote {base.name} (best guess from {count} volumes)"


def write_images(checkpoint: str | os.PathLike, out: str | os.PathLike, *, n: int = 16, size: int | None = None,
                 steps: int | None = None, method: str = "ddpm", seed: int = 0, prior: str = "standard",
                 device: str | None = None) -> str:
    """``m3d sample2d``: ``n`` images of ``size`` (default: the training size) from ``checkpoint`` written to
    ``out`` (.png: a tiled picture; .npy / .tif: an (n, S, S) stack of phase labels) with a ``<out>.json``
    sidecar; ``prior``: "standard" or "data" (see ``diffusion.sample2d.sample_images``). Returns the line to print."""
    import time
    from pathlib import Path

    import torch

    from .devices import pick_device
    from .diffusion.sample2d import sample_images
    from .diffusion.schedule import NoiseSchedule
    from .io.arrays import write_array
    from .io.checkpoint import load_checkpoint
    from .io.files import provenance, write_json
    from .io.pictures import image_grid
    from .phases import to_phases

    if Path(out).suffix.lower() not in (".png", ".npy", ".tif", ".tiff"):
        raise UserError(f"-o must end in .png, .npy, .tif or .tiff, got {out}")
    writable_outputs([Path(out), Path(f"{out}.json")])
    dev = pick_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    size = size if size is not None else int(ckpt.data.get("image_size", 64))
    if size % ckpt.unet.divisor:
        raise UserError(f"--size {size} must be a multiple of {ckpt.unet.divisor} for this model")
    require_memory(n * (ckpt.unet.forward_bytes(size, size) + 16 * ckpt.unet.channels * size * size),
                   f"{n} images of {size}x{size}", dev, "use a smaller -n or --size")
    t0 = time.perf_counter()
    images = sample_images(ckpt.model, NoiseSchedule(ckpt.schedule), n, size, steps, seed, dev, method=method,
                           prior=ckpt.prior if prior == "data" else None)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(images).all():
        raise UserError("the images came out with NaN or infinite values; nothing written")
    write_array(out, image_grid(images) if Path(out).suffix.lower() == ".png" else to_phases(images).cpu().numpy())
    write_json(f"{out}.json", {"model": ckpt.describe(), "n": n, "size": size, "steps": steps, "method": method,
                               "seed": seed, "prior": prior, "seconds": seconds, "provenance": provenance()})
    return f"wrote {out} ({n} images of {size}x{size}, {seconds:.1f} s)"
