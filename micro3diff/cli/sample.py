"""``m3d sample``: 3D volumes from a trained 2D model by multi-plane harmonized sampling (``sampling.write_samples``
says which files a volume gets)."""
from __future__ import annotations

from pathlib import Path

import click

from ..axes import PLANES
from ..checks import number
from ..diffusion.settings import AUTO, PRESETS
from ..errors import UserError
from ..sampling import FORMATS
from ._common import progress_bar, quiet_option, say, set_threads, user_errors, voxel_size_option


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
    """--volume-fraction: data / auto / off / anchors as they are, else comma-separated numbers."""
    if spec in ("data", "auto", "off", "anchors"):
        return spec
    try:
        return [float(v) for v in spec.split(",")]
    except ValueError:
        raise UserError(f"--volume-fraction must be data, off, anchors or comma-separated numbers, "
                        f"got {spec!r}") from None


@click.command()
@click.argument("model", required=False)
@click.option("--models", "plane_specs", multiple=True, metavar="PLANE=MODEL",
              help="Per-plane model (yz, xz, xy) for anisotropic materials; repeat or comma-separate. "
                   "Planes not given use MODEL.")
@click.option("--size", type=int, help="Cubic volume side (default: the model's training image size, else 64).")
@click.option("--shape", type=int, nargs=3, metavar="D H W",
              help="Non-cubic volume (sides along D, H, W; yz slices are at fixed D).")
@click.option("--count", type=int, default=1, show_default=True, help="Number of volumes.")
@click.option("--preset", type=click.Choice([AUTO, *PRESETS]), default=AUTO, show_default=True,
              help="Steps / harmonization settings; auto: the setting measured for a shipped model's weights "
                   "(micro3diff/models/samplers.json), fast for any other model; --steps, --harmonize, --method, "
                   "--eta override it.")
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
                   "'auto' (data when the checkpoint records them, else off), or 'anchors' (the anchored voxels', "
                   "for serial sections).")
@click.option("--anchor", "anchor_specs", multiple=True, metavar="AXIS=INDEX:FILE",
              help="A measured slice every volume must contain exactly (repeatable), AXIS x, y or z = array axis D, "
                   "H or W: e.g. x=0:face.tif (a D-slice, H x W). Phases as the training images'.")
@click.option("--anchors", "stack_spec", metavar="AXIS:FILE",
              help="Serial sections: slice j of the stack FILE at index j * --every along AXIS.")
@click.option("--every", type=int, help="Section spacing of --anchors, in voxels.")
@click.option("--estimate", is_flag=True,
              help="With anchors (two phases, --count >= 3): also write <stem>_estimate, the voxel-by-voxel best "
                   "guess from the COUNT volumes at the anchors' phase fraction (not a realization: smoother).")
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
           every: int | None, estimate: bool, threads: int | None, fmt: str,
           voxel_size: tuple[float, float, float] | None, unit: str | None, out_dir: Path, stem: str | None, overwrite: bool) -> None:
    """Generate COUNT volumes from MODEL (a checkpoint file or a shipped model name).

    Under `torchrun --nproc_per_node N m3d sample ...` rank r of N makes volumes r, r + N, ...; volume i
    always uses seed + i, so its content does not depend on N, on the rank or on what was skipped.
    Interrupted runs resume: volumes whose files all exist are skipped.
    """
    from ..sampling import write_samples

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
    lines = write_samples(_plane_names(model, plane_specs), out_dir, shape=shape or None, size=size, count=count,
                          seed=seed, device=device, suffixes=_formats(fmt), stem=stem, overwrite=overwrite,
                          voxel_size=voxel_size, unit=unit, preset=preset, steps=steps, n_harmonize=n_harmonize,
                          method=method, eta=eta, prior=prior_mode, anchor_specs=anchor_specs, stack_spec=stack_spec,
                          every=every, estimate=estimate,
                          bar=progress_bar(total=0, desc="sampling", unit="step", leave=False),
                          fast=fast, volume_fraction=_volume_fraction(vf_spec), max_batch=max_batch, periodic=periodic)
    for line in lines:
        say(line)
