"""``m3d evaluate``: S2 and L(z) of generated volumes against a reference (paper 3.5).

Writes REPORT_DIR/report.json, curves.csv, two_point.png and lineal_path.png; prints a short table.
With ``--blocks N`` also REPORT_DIR/drift.json: S2 / L drift between N blocks along each volume's longest axis
(``micro3diff.metrics.drift``), beside the same numbers for crops of a 3D reference.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ._common import quiet_option, say, set_threads, show_progress, user_errors, voxel_size_option


@click.command()
@click.argument("generated", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reference", "-r", required=True, type=click.Path(path_type=Path),
              help="Reference image (2D) or volume (3D): .npy, .tif or .png.")
@click.option("--mode", type=click.Choice(["3d", "2d"]), default=None,
              help="3d: 3D metrics (3D reference); 2d: 2D metrics on the three planes (2D reference). "
                   "Default: from the reference's dimensions.")
@click.option("--r-max", type=int, default=None, help="Largest lag (default: half the generated size).")
@click.option("--threshold", default=None, help="Binarise non-binary inputs: a number or 'otsu'.")
@click.option("--phase", type=int, default=None, help="Phase label to measure (default 1).")
@click.option("--periodic", is_flag=True, help="Periodic estimators (the volumes wrap around).")
@click.option("--crops", type=int, default=64, show_default=True, help="Reference crops for the floor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the crops and the shuffle.")
@click.option("--blocks", type=int, default=0,
              help="Drift check: cut each 3D volume into N >= 2 blocks along its longest axis (writes drift.json).")
@click.option("--threads", type=int, help="CPU threads for torch (default: torch's choice).")
@voxel_size_option(" for the plots' lags (default: the one the generated files' TIFF tags or sidecars record, "
                   "else the reference's)")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(path_type=Path), help="Report folder.")
@quiet_option
@user_errors
def evaluate(generated: tuple[Path, ...], reference: Path, mode: str | None, r_max: int | None,
             threshold: str | None, phase: int | None, periodic: bool, crops: int, seed: int, blocks: int,
             threads: int | None, voxel_size: tuple[float, float, float] | None, unit: str | None,
             out_dir: Path) -> None:
    """Compare GENERATED volumes (or 2D images) with a reference: S2, L(z), floor and baseline."""
    from ..checks import number
    from ..metrics.report_files import evaluate_files

    set_threads(threads)
    if crops < 1:
        raise UserError(f"--crops must be at least 1, got {crops}")
    number("--r-max", r_max, lo=1)
    if blocks == 1 or blocks < 0:
        raise UserError(f"--blocks must be 0 (off) or at least 2, got {blocks}")
    lines, paths = evaluate_files(generated, reference, out_dir, threshold=threshold, blocks=blocks,
                                  voxel_size=voxel_size, unit=unit, seed=seed, phase=phase, mode=mode, r_max=r_max,
                                  periodic=periodic, n_crops=crops, progress=show_progress(),
                                  warn=lambda message: click.echo(message, err=True))
    for line in lines:
        click.echo(line)
    say(f"wrote {', '.join(str(p) for p in paths)}")
