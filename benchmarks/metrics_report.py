"""S2 and L(z) at 64^3, 128^3, 256^3: micro3diff (compiled CPU) vs PoreSpy 3.2.0, same curves first.

Estimators compared (both on a periodic overlapping-spheres volume, R = 6, phi = 0.6, phase 1):

* S2: PoreSpy ``metrics.two_point_correlation`` zero-pads to 2n, divides the FFT autocorrelation by
  the pair count of every lag vector and averages over radial bins. Given bins centred on the integers
  (edges k - 1/2) it is the same estimator as ``micro3diff.metrics.correlation.two_point(...).average`` (non-periodic,
  rounded-|r| bins), so the curves must agree to float rounding.
* L(z): PoreSpy has no Torquato lineal path. Its ``metrics.lineal_path_distribution`` histograms
  ``filters.distance_transform_lin(mode="forward")``, whose value at a phase voxel is the length of the
  run ending there; the voxels with value > z are exactly the segments of z + 1 voxels, so Torquato's
  non-periodic L(z) = #(value > z) / (lines * (n - z)) per axis. We time distance_transform_lin +
  lineal_path_distribution on the three axes and check the L(z) read off it against ours.
  (``metrics.chord_length_distribution`` on ``filters.apply_chords`` is a chord-length density on
  every other line with edge chords trimmed: a different quantity, not compared.)

Timings: best of several interleaved runs (one for PoreSpy's 256^3 S2), after a warm-up (numba JIT),
with torch and PoreSpy on 1 thread and on all cores alike; the load average is recorded (shared machine). Writes benchmarks/results/metrics_cpu.json.

    nice -n 10 /path/to/venv-with-porespy/bin/python benchmarks/metrics_report.py [--sizes 64 128 256] [--threads 1 2]
"""
from __future__ import annotations

import os
import sys
from importlib.metadata import version

import numpy as np
import torch

import _bench
from micro3diff import _ext, reference
from micro3diff.metrics import correlation
from micro3diff.synth import generators as synth

RADIUS, PHI = 6.0, 0.6


def porespy_lineal_path(ps, im: np.ndarray, r_max: int) -> np.ndarray:
    """Torquato L(z) per axis read off PoreSpy's forward linear distance transform: (3, r_max + 1)."""
    curves = []
    for axis in range(3):
        dist = ps.filters.distance_transform_lin(im, axis=axis, mode="forward")
        n = im.shape[axis]
        hist = ps.metrics.lineal_path_distribution(dist, bins=np.arange(n + 1) + 0.5)  # bin k: value k + 1
        count = int((dist > 0).sum())
        longer = hist.cdf * count  # cdf[k] = fraction of phase voxels with value >= k + 1
        curves.append([longer[z] / (im.size / n * (n - z)) for z in range(r_max + 1)])
    return np.array(curves)


def measure(ps, n: int) -> dict:
    """Times and curve differences at n^3 for the current thread count."""
    vol = synth.overlapping_spheres((n, n, n), radius=RADIUS, matrix_fraction=PHI, seed=0).array
    im, x, r_max = vol.astype(bool), torch.from_numpy(vol), n // 2
    slow = 1 if n >= 256 else 3  # PoreSpy's S2 at 256^3 takes minutes
    noise = torch.rand(n, n, n, generator=torch.Generator().manual_seed(0)) < PHI
    t = _bench.interleaved({
        "s2": lambda: correlation.two_point(x, r_max),
        "s2_periodic": lambda: correlation.two_point(x, r_max, periodic=True),
        "ps_s2": lambda: ps.metrics.two_point_correlation(im, bins=np.arange(r_max + 2) - 0.5),
        "lp": lambda: correlation.lineal_path(x, r_max),
        "lp_noise": lambda: correlation.lineal_path(noise, r_max),
        "lp_twin": lambda: reference.lineal_path(x[None], r_max, False),
        "ps_lp": lambda: porespy_lineal_path(ps, im, r_max),
    }, {"s2": 3, "s2_periodic": 3, "ps_s2": slow, "lp": 9, "lp_noise": 9, "lp_twin": 1, "ps_lp": 3}, warmup=False)
    t_s2, t_s2_periodic, t_ps_s2 = t["s2"].best, t["s2_periodic"].best, t["ps_s2"].best
    t_lp, t_lp_noise, t_lp_twin, t_ps_lp = t["lp"].best, t["lp_noise"].best, t["lp_twin"].best, t["ps_lp"].best
    ours, theirs, lp, lp_ps = t["s2"].output, t["ps_s2"].output, t["lp"].output, t["ps_lp"].output
    row = {
        "size": n, "r_max": r_max, "volume_fraction": float(vol.mean()),
        "two_point": {
            "micro3diff_s": t_s2, "micro3diff_periodic_s": t_s2_periodic, "porespy_s": t_ps_s2,
            "speedup": t_ps_s2 / t_s2,
            "max_abs_diff": float(np.abs(theirs.probability_scaled - ours.average.numpy()).max()),
        },
        "lineal_path": {
            "micro3diff_s": t_lp, "micro3diff_iid_noise_s": t_lp_noise, "reference_twin_s": t_lp_twin,
            "porespy_s": t_ps_lp, "speedup": t_ps_lp / t_lp,
            "max_abs_diff": float(np.abs(lp_ps - lp.parts.numpy()).max()),
        },
    }
    print(f"{torch.get_num_threads()} thread(s) {n:>4}^3  S2 {t_s2:8.3f} s vs PoreSpy {t_ps_s2:8.3f} s "
          f"({row['two_point']['speedup']:6.1f}x, diff {row['two_point']['max_abs_diff']:.1e})   "
          f"L {t_lp * 1e3:8.2f} ms vs PoreSpy {t_ps_lp:7.3f} s "
          f"({row['lineal_path']['speedup']:6.1f}x, diff {row['lineal_path']['max_abs_diff']:.1e})", flush=True)
    return row


def main() -> None:
    parser = _bench.parser(__doc__, out="metrics_cpu.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()],
                        help="thread counts for torch and PoreSpy alike (1 is robust to a loaded machine)")
    args = parser.parse_args()
    try:
        import porespy as ps
    except ImportError:
        sys.exit("PoreSpy is not installed: pip install porespy==3.2.0 (only for this benchmark)")
    if not _ext.has_kernel("lineal_path", "cpu"):
        sys.exit("the compiled lineal_path is not built: python setup.py build_ext --inplace")
    ps.settings.tqdm["disable"] = True
    warm = synth.overlapping_spheres((24, 24, 24), radius=4, matrix_fraction=PHI, seed=0).array.astype(bool)
    ps.metrics.two_point_correlation(warm, bins=np.arange(14) - 0.5)
    porespy_lineal_path(ps, warm, 12)

    runs, load_before = [], os.getloadavg()
    for threads in args.threads:
        torch.set_num_threads(threads)
        ps.settings.ncores = threads  # PoreSpy's FFT workers
        runs.append({"threads": threads, "results": [measure(ps, n) for n in args.sizes]})

    _bench.write_result(args.out or _bench.RESULTS / "metrics_cpu.json", {
        "benchmark": "S2 and Torquato L(z), micro3diff compiled CPU vs PoreSpy",
        "porespy_versions": {p: version(p) for p in ("porespy", "scipy", "numba")},
        "structure": f"periodic overlapping spheres (micro3diff.synth.generators), R = {RADIUS}, phi = {PHI}, seed 0; "
                     "L also on i.i.d. voxels (phi 0.6), the worst case for run lengths",
        "estimators": {
            "two_point": "both: non-periodic, zero-padded FFT autocorrelation / pair count per lag vector, mean "
                         "over rounded-|r| bins (PoreSpy bins = arange(r_max + 2) - 0.5); micro3diff in float64 "
                         "with exact integer pair counts",
            "lineal_path": "Torquato L(z) per axis, non-periodic; PoreSpy: distance_transform_lin(forward) + "
                           "lineal_path_distribution, L(z) read off its cdf; chord_length_distribution not comparable",
        },
        "load_average_before": load_before,
        "goals": {"two_point_speedup_256": 10, "lineal_path_speedup_256": 50},
        "runs": runs,
    }, "cpu", __file__)


if __name__ == "__main__":
    main()
