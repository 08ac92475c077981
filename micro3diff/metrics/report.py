"""Evaluation report: S2 and L(z) of generated samples against a reference, with floor and baseline.

Protocol (paper 3.5, DESIGN 1.4): a 3D reference gets 3D metrics of each generated volume; a 2D
reference gets 2D metrics, on the three orthogonal planes of each generated volume (or on generated
2D images directly). Conventions of the curves and of the error rate are those of ``micro3diff.metrics.correlation``.

For each metric the report holds the reference curve, the generated mean and spread over samples,
the error rate of the mean curve (the paper's number) and of every sample, errors per axis (3D) or
per plane (2D; the paper quotes the largest), the natural-variability floor (random crops of the
reference of the generated size against the full reference: per crop, and of the mean crop curve)
and the shuffled baseline (the reference's voxels permuted). A generated result is only as good as
its distance to these two.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import axes, phases
from ..errors import UserError
from ..io.arrays import voxel_size3
from ..io.files import provenance
from . import compare, correlation

Mode = Literal["3d", "2d"]


@dataclasses.dataclass(frozen=True)
class MetricReport:
    """One metric (``two_point`` or ``lineal_path``); curves are lists over r = 0..r_max, errors in %."""

    metric: str
    reference: list[float]
    reference_parts: dict[str, list[float]]
    generated_mean: list[float]
    generated_std: list[float]
    generated_parts: dict[str, list[float]]
    error_of_mean: float
    errors: list[float]
    part_errors: dict[str, float]
    isotropy: dict[str, float]
    floor: dict | None
    baseline: dict


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    """Everything ``m3d evaluate`` writes to report.json."""

    mode: str
    r_max: int
    periodic: bool
    phase: int
    threshold: float | None
    reference: dict
    generated: list[dict]
    metrics: dict[str, MetricReport]
    notes: list[str]
    provenance: dict
    voxel_size: list[float] | None = None  # (d, h, w) in ``unit``: the plots' lags are physical when cubic
    unit: str | None = None


def _list(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.flatten()]


def _spread(t: torch.Tensor) -> torch.Tensor:
    return t.std(dim=0) if t.shape[0] > 1 else torch.zeros_like(t[0])


def _threshold_value(values: Sequence[np.ndarray], threshold: phases.Threshold) -> float | None:
    if threshold != "otsu":
        return None if threshold is None else float(threshold)
    return phases.otsu_threshold(np.concatenate([v.ravel() for v in values]))


def evaluate(generated: Sequence[np.ndarray | torch.Tensor], reference: np.ndarray | torch.Tensor, *,
             mode: Mode | None = None, r_max: int | None = None, periodic: bool = False, phase: int | None = None,
             threshold: phases.Threshold = None, names: Sequence[str] | None = None, n_crops: int = 64,
             seed: int = 0, progress: bool = False, voxel_size: float | Sequence[float] | None = None,
             unit: str = "um") -> EvaluationReport:
    """S2 and L of generated volumes (D, H, W) (or 2D images (H, W) in 2d mode) against a reference.

    mode: "3d" (3D reference) or "2d" (2D reference; default from the reference's dims). threshold:
    a number or "otsu" (one value for all inputs, from the reference and generated values together).
    n_crops: crops for the natural-variability floor; seed: crops and shuffle. voxel_size (one number or
    (d, h, w), in ``unit``): recorded, and the plots' lags are in ``unit`` when the voxels are cubic.
    """
    if not generated:
        raise UserError("no generated samples given")
    names = list(names) if names is not None else [f"sample_{i}" for i in range(len(generated))]
    arrays = [np.asarray(g) if not isinstance(g, torch.Tensor) else g.cpu().numpy() for g in generated]
    ref_np = np.asarray(reference) if not isinstance(reference, torch.Tensor) else reference.cpu().numpy()
    mode = mode or ("3d" if ref_np.ndim == 3 else "2d")
    if mode not in ("3d", "2d"):
        raise UserError(f"mode must be 3d or 2d, got {mode!r}")
    if ref_np.ndim != {"3d": 3, "2d": 2}[mode]:
        raise UserError(f"mode {mode} needs a {mode[0]}D reference, got shape {ref_np.shape}"
                        + (" (use --mode 2d)" if ref_np.ndim == 2 else " (use --mode 3d)" if ref_np.ndim == 3 else ""))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise UserError(f"generated samples have different shapes: {sorted(shapes)}")
    shape = arrays[0].shape
    if len(shape) != 3 and not (mode == "2d" and len(shape) == 2):
        raise UserError(f"generated samples must be 3D volumes{' or 2D images' if mode == '2d' else ''}, got shape {shape}")
    t = _threshold_value([ref_np, *arrays], threshold)
    ref = phases.binarize(ref_np, phase=phase, threshold=t)
    gen = torch.stack([phases.binarize(a, phase=phase, threshold=t) for a in arrays])
    planes = mode == "2d" and len(shape) == 3
    sample_size = shape[1:] if planes else shape  # crops for the floor: the xy-slice size in 2d mode
    r_max = correlation.resolve_r_max(tuple(shape) + tuple(ref.shape), r_max, periodic)
    notes = []
    spacing = voxel_size3(voxel_size)
    if spacing and len(set(spacing)) > 1:
        notes.append(f"anisotropic voxels {spacing} {unit}: lags are counted in voxels along each axis, and the "
                     f"plots show them in voxels")
    floor_possible = all(s <= n for s, n in zip(sample_size, ref.shape)) and tuple(sample_size) != tuple(ref.shape)
    if any(s > n for s, n in zip(sample_size, ref.shape)):
        notes.append(f"the reference {tuple(ref.shape)} is smaller than the generated samples {tuple(sample_size)}: "
                     f"lags stop at {r_max} and the reference cannot show the variability of a sample-sized "
                     f"region, so the errors below are not a fair test; use a reference larger than the samples")
    elif not floor_possible:
        notes.append(f"no natural-variability floor: generated size {tuple(sample_size)} is not smaller than the "
                     f"reference {tuple(ref.shape)}")
    if planes:
        notes.append("2d mode on volumes: each volume's curve is the mean over all slices of its yz, xz and xy "
                     "planes; the floor uses single crops of the xy-slice size, so compare per-volume errors "
                     "with the floor of the mean crop curve")

    reports = {}
    steps = 2 * (len(arrays) + 2 + floor_possible)
    with tqdm(total=steps, desc="evaluate", unit="curve", disable=not progress) as bar:
        for name in correlation.METRICS:
            fn = correlation.metric_function(name)
            ref_corr = fn(ref, r_max, periodic=periodic)
            bar.update()
            curves = []
            for v in gen:
                curves.append(correlation.plane_correlation(v[None], name, r_max, periodic=periodic) if planes
                              else fn(v, r_max, periodic=periodic))
                bar.update()
            average = torch.stack([c.average.reshape(-1) for c in curves])  # (V, R + 1)
            parts = torch.stack([c.parts.reshape(-1, r_max + 1) for c in curves])  # (V, K, R + 1)
            part_names = curves[0].names
            mean_parts = parts.mean(dim=0)
            # per-axis errors compare matching axes (3D); planes and 2D axes compare with the reference average
            ref_parts = ref_corr.parts if mode == "3d" else ref_corr.average.expand_as(mean_parts)
            floor = None
            if floor_possible:
                fl = compare.natural_variability_floor(ref, tuple(sample_size), name, r_max, n_crops=n_crops,
                                                       periodic=periodic, seed=seed)
                floor = {"errors_mean": float(fl.errors.mean()), "errors_std": float(_spread(fl.errors[:, None])),
                         "error_of_mean": float(compare.error_rate(fl.curves.mean(dim=0), ref_corr.average)),
                         "n_crops": n_crops, "crop_size": list(sample_size),
                         "curve_mean": _list(fl.curves.mean(dim=0)), "curve_std": _list(_spread(fl.curves))}
                bar.update()
            base = compare.shuffled_baseline(ref, name, r_max, periodic=periodic, seed=seed)
            bar.update()
            reports[name] = MetricReport(
                metric=name,
                reference=_list(ref_corr.average),
                reference_parts={k: _list(ref_corr.parts[i]) for i, k in enumerate(ref_corr.names)},
                generated_mean=_list(average.mean(dim=0)),
                generated_std=_list(_spread(average)),
                generated_parts={k: _list(mean_parts[i]) for i, k in enumerate(part_names)},
                error_of_mean=float(compare.error_rate(average.mean(dim=0), ref_corr.average)),
                errors=_list(compare.error_rate(average, ref_corr.average)),
                part_errors={k: float(e) for k, e in zip(part_names, compare.error_rate(mean_parts, ref_parts))},
                isotropy={k: float(e) for k, e in compare.isotropy(
                    correlation.Correlation(average.mean(dim=0), mean_parts, part_names)).items()},
                floor=floor,
                baseline={"error": float(base.errors[0]), "curve": _list(base.curves[0])},
            )
    return EvaluationReport(
        mode=mode, r_max=r_max, periodic=periodic, phase=1 if phase is None else phase, threshold=t,
        reference={"shape": list(ref.shape), "volume_fraction": float(correlation.volume_fraction(ref))},
        generated=[{"name": n, "shape": list(shape), "volume_fraction": float(correlation.volume_fraction(g))}
                   for n, g in zip(names, gen)],
        metrics=reports, notes=notes, provenance=provenance(),
        voxel_size=list(spacing) if spacing else None, unit=unit if spacing else None,
    )


def format_table(report: EvaluationReport) -> str:
    """A short text table of the error rates (%)."""
    planes = set(next(iter(report.metrics.values())).part_errors) == set(axes.PLANES)
    head = f"{'metric':<6} {'mean curve':>10} {'per sample':>15} {'floor/crop':>15} {'floor mean':>10} " \
           f"{'baseline':>8}  worst {'plane' if planes else 'axis'}"
    rows = [head]
    for name, m in report.metrics.items():
        per = f"{np.mean(m.errors):.2f} ± {np.std(m.errors):.2f}"
        fl = m.floor
        floor = f"{fl['errors_mean']:.2f} ± {fl['errors_std']:.2f}" if fl else "-"
        floor_mean = f"{fl['error_of_mean']:.2f}" if fl else "-"
        worst = max(m.part_errors, key=m.part_errors.get)
        rows.append(f"{correlation.LABELS[name]:<6} {m.error_of_mean:>10.2f} {per:>15} {floor:>15} {floor_mean:>10} "
                    f"{m.baseline['error']:>8.2f}  {worst} {m.part_errors[worst]:.2f}")
    rows.append(f"reference phi = {report.reference['volume_fraction']:.4f}; generated phi = "
                f"{np.mean([g['volume_fraction'] for g in report.generated]):.4f} (mean of {len(report.generated)})")
    return "\n".join(rows)
