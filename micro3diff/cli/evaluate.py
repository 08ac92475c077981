"""``m3d evaluate``: S2 and L(z) of generated volumes against a reference (paper 3.5).

Writes REPORT_DIR/report.json, curves.csv, two_point.png and lineal_path.png; prints a short table.
With ``--blocks N`` also REPORT_DIR/drift.json: S2 / L drift between N blocks along each volume's longest axis
(``micro3diff.drift``), beside the same numbers for crops of a 3D reference.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import UserError
from ._common import quiet_option, say, set_threads, show_progress, user_errors, voxel_size_option


def _voxel_size(generated: tuple[Path, ...], reference: Path) -> tuple[tuple[float, float, float], str] | None:
    """The voxel size the generated files record (TIFF tags or sidecar), else the reference's; None if neither."""
    from ..io.arrays import read_voxel_size

    found = {read_voxel_size(p) for p in generated} - {None}
    if len(found) > 1:
        raise UserError(f"the generated files record different voxel sizes ({', '.join(map(str, sorted(found)))}); "
                        f"give --voxel-size")
    ref = read_voxel_size(reference)
    if found and ref and ref not in found:
        (size, unit), (rsize, runit) = next(iter(found)), ref
        click.echo(f"warning: the generated volumes record voxel size {size} {unit} but the reference {rsize} {runit}; "
                   f"S2 and L are compared lag by lag in voxels, so resample one to the other's voxel size", err=True)
    return found.pop() if found else ref


def _threshold(value: str | None) -> float | str | None:
    if value is None or value == "otsu":
        return value
    try:
        return float(value)
    except ValueError:
        raise UserError(f"--threshold must be a number or 'otsu', got {value!r}") from None


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
    from ..metrics import report
    from ..checks import number
    from ..io.arrays import read_array

    set_threads(threads)
    if crops < 1:
        raise UserError(f"--crops must be at least 1, got {crops}")
    number("--r-max", r_max, lo=1)
    if blocks == 1 or blocks < 0:
        raise UserError(f"--blocks must be 0 (off) or at least 2, got {blocks}")
    ref = read_array(reference)
    arrays, names = [], []
    for path in generated:
        arr = read_array(path)
        batch = arr if arr.ndim == 4 else [arr]  # a 4D file holds several volumes
        arrays += list(batch)
        names += [path.name] if arr.ndim != 4 else [f"{path.name}[{i}]" for i in range(len(arr))]
    if blocks and any(a.ndim != 3 for a in arrays):
        raise UserError("--blocks needs 3D generated volumes")
    recorded = None if voxel_size else _voxel_size(generated, reference)
    if recorded:
        voxel_size, unit = recorded[0], unit or recorded[1]
    result = report.evaluate(arrays, ref, mode=mode, r_max=r_max, periodic=periodic, phase=phase,
                             threshold=_threshold(threshold), names=names, n_crops=crops, seed=seed,
                             progress=show_progress(), voxel_size=voxel_size, unit=unit or "um")
    paths = report.write_report(result, out_dir)
    if blocks:
        from ..metrics.drift import drift_report
        from ..io.files import write_json

        drift = drift_report(arrays, ref, blocks, phase=phase, threshold=result.threshold, seed=seed)
        paths.append(out_dir / "drift.json")
        write_json(paths[-1], drift)
        for name, d in drift.items():
            natural = d["reference_first_last"]
            click.echo(f"drift {report.LABELS[name]} (axis {d['axis']}, {blocks} blocks): first vs last block "
                       f"{np.mean(d['first_last']):.2f} %" + (f"; reference crops {natural['mean']:.2f} ± "
                                                              f"{natural['std']:.2f} %" if natural else ""))
    click.echo(report.format_table(result))
    for note in result.notes:
        click.echo(f"note: {note}")
    say(f"wrote {', '.join(str(p) for p in paths)}")
