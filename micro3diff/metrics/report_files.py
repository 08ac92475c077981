"""The evaluation report's files (report.json, curves.csv (metric, curve, r, value), one plot per metric) and
``m3d evaluate`` as a function (``evaluate_files``, with the optional drift.json of ``micro3diff.metrics.drift``)."""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..checks import writable_outputs
from ..errors import UserError
from ..io.arrays import read_array, read_voxel_size
from ..io.files import atomic_path, write_json
from ..phases import parse_threshold
from . import correlation
from .report import EvaluationReport, MetricReport, evaluate, format_table


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _csv_rows(report: EvaluationReport) -> list[tuple[str, str, int, float]]:
    rows = []
    for name, m in report.metrics.items():
        curves = {"reference": m.reference, "generated_mean": m.generated_mean, "generated_std": m.generated_std,
                  "baseline": m.baseline["curve"]}
        curves |= {f"reference_{k}": v for k, v in m.reference_parts.items()}
        curves |= {f"generated_{k}": v for k, v in m.generated_parts.items()}
        if m.floor:
            curves |= {"floor_mean": m.floor["curve_mean"], "floor_std": m.floor["curve_std"]}
        rows += [(name, curve, r, v) for curve, values in curves.items() for r, v in enumerate(values)]
    return rows


def _plot(m: MetricReport, path: Path, voxel: float, unit: str) -> None:
    """Two panels (average; per axis / plane) with lags r in ``unit`` (``voxel`` per voxel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = voxel * np.arange(len(m.reference))
    label = correlation.LABELS[m.metric]
    fig, (ax, ax_parts) = plt.subplots(1, 2, figsize=(11, 4.2))
    mean, std = np.array(m.generated_mean), np.array(m.generated_std)
    ax.plot(r, m.reference, "k-", lw=2, label="reference")
    ax.plot(r, mean, "C0-", label=f"generated (error {m.error_of_mean:.2f} %)")
    ax.fill_between(r, mean - std, mean + std, color="C0", alpha=0.25, label="generated ± std")
    if m.floor:
        fm, fs = np.array(m.floor["curve_mean"]), np.array(m.floor["curve_std"])
        ax.fill_between(r, fm - fs, fm + fs, color="0.5", alpha=0.25,
                        label=f"reference crops ± std (floor {m.floor['errors_mean']:.2f} %)")
    ax.plot(r, m.baseline["curve"], "C3--", label=f"shuffled baseline ({m.baseline['error']:.2f} %)")
    ax.set(xlabel=f"r ({unit})", ylabel=f"{label}(r)", title=f"{label}: reference vs generated")
    ax.legend(fontsize=8)
    for i, (k, v) in enumerate(m.generated_parts.items()):
        ax_parts.plot(r, v, f"C{i}-", label=f"generated {k} ({m.part_errors[k]:.2f} %)")
    for i, (k, v) in enumerate(m.reference_parts.items()):
        ax_parts.plot(r, v, f"C{i + 3}:", label=f"reference {k}")
    ax_parts.set(xlabel=f"r ({unit})", ylabel=f"{label}(r)", title=f"{label} per axis / plane")
    ax_parts.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """Write report.json, curves.csv (metric, curve, r, value) and one PNG per metric; returns the paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / "report.json", out_dir / "curves.csv"] + [out_dir / f"{n}.png" for n in report.metrics]
    writable_outputs([*paths, out_dir / "drift.json"])
    write_json(paths[0], report)
    with atomic_path(paths[1]) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metric", "curve", "r", "value"])
        writer.writerows((n, c, r, f"{v:.10g}" if math.isfinite(v) else "nan") for n, c, r, v in _csv_rows(report))
    cubic = report.voxel_size is not None and len(set(report.voxel_size)) == 1
    for m, path in zip(report.metrics.values(), paths[2:]):
        _plot(m, path, *((report.voxel_size[0], report.unit) if cubic else (1.0, "voxels")))
    return paths


def recorded_voxel_size(generated: Sequence[Path], reference: Path, warn: Callable[[str], None] = _stderr
                        ) -> tuple[tuple[float, float, float], str] | None:
    """The voxel size the generated files record (TIFF tags or sidecar), else the reference's; None if neither."""
    found = {read_voxel_size(p) for p in generated} - {None}
    if len(found) > 1:
        raise UserError(f"the generated files record different voxel sizes ({', '.join(map(str, sorted(found)))}); "
                        f"give --voxel-size")
    ref = read_voxel_size(reference)
    if found and ref and ref not in found:
        (size, unit), (rsize, runit) = next(iter(found)), ref
        warn(f"warning: the generated volumes record voxel size {size} {unit} but the reference {rsize} {runit}; "
             f"S2 and L are compared lag by lag in voxels, so resample one to the other's voxel size")
    return found.pop() if found else ref


def evaluate_files(generated: Sequence[Path], reference: Path, out_dir: Path, *, threshold: str | None = None,
                   blocks: int = 0, voxel_size: tuple[float, float, float] | None = None, unit: str | None = None,
                   seed: int = 0, phase: int | None = None, warn: Callable[[str], None] = _stderr,
                   **options) -> tuple[list[str], list[Path]]:
    """``m3d evaluate``: the report of ``generated`` files (a 4D file holds several volumes) against ``reference``
    written to ``out_dir``; with ``blocks`` >= 2 also drift.json. ``options``: as ``report.evaluate`` (mode,
    r_max, periodic, n_crops, progress). Returns (the lines to print: drift, table, notes; the paths written)."""
    ref = read_array(reference)
    arrays, names = [], []
    for path in generated:
        arr = read_array(path)
        batch = arr if arr.ndim == 4 else [arr]  # a 4D file holds several volumes
        arrays += list(batch)
        names += [path.name] if arr.ndim != 4 else [f"{path.name}[{i}]" for i in range(len(arr))]
    if blocks and any(a.ndim != 3 for a in arrays):
        raise UserError("--blocks needs 3D generated volumes")
    recorded = None if voxel_size else recorded_voxel_size(generated, reference, warn)
    if recorded:
        voxel_size, unit = recorded[0], unit or recorded[1]
    result = evaluate(arrays, ref, threshold=parse_threshold(threshold, "--threshold"), names=names, seed=seed,
                      phase=phase, voxel_size=voxel_size, unit=unit or "um", **options)
    paths, lines = write_report(result, out_dir), []
    if blocks:
        from .drift import drift_report

        drift = drift_report(arrays, ref, blocks, phase=phase, threshold=result.threshold, seed=seed)
        paths.append(out_dir / "drift.json")
        write_json(paths[-1], drift)
        for name, d in drift.items():
            natural = d["reference_first_last"]
            lines.append(f"drift {correlation.LABELS[name]} (axis {d['axis']}, {blocks} blocks): first vs last block "
                         f"{np.mean(d['first_last']):.2f} %" + (f"; reference crops {natural['mean']:.2f} ± "
                                                                f"{natural['std']:.2f} %" if natural else ""))
    return lines + [format_table(result)] + [f"note: {note}" for note in result.notes], paths
