"""How well can any estimator fill the held-out slices of the anchors benchmark? -> anchors_ceiling.json

The truths of ``benchmarks/anchors.py`` are balls (``make_case``: spheres; carbonate-like Boolean spheres), so
the sections show discs. The *section oracle* knows every ball that cuts a section (centre and radius: more
than the pixels say) and paints it whole, with one exception that no estimator can resolve: a ball cut by a
single section whose mirror image about that section would cut exactly the same sections gives the same
disc from either side, so the oracle paints only the voxels both positions cover (the others are a coin toss
for anyone). Balls that cut no section are invisible and not painted. Its held-out voxel accuracy is about
the best any estimator from the sections can reach on average; beside it, the linear interpolation baseline
of ``anchors.py``, both on the same truths (seeds as in anchors.py) and layouts (``--every``,
``--hold-out-every``).

  PYTHONPATH=. python benchmarks/anchors_ceiling.py --count 6
"""
from __future__ import annotations

import argparse

import numpy as np

import _bench
import anchors
from micro3diff.synth.placement import covered


def ball(centre: np.ndarray, radius: float, shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices of the voxels of one periodic ball (the generators' rule)."""
    return next(covered(centre[None], np.full((1, len(shape)), radius), shape, True))


def section_oracle(balls, idx: list[int]) -> tuple[np.ndarray, dict[str, int]]:
    """(estimate (D, H, W) uint8, ball counts {cut, ambiguous, invisible}) for sections at x in ``idx``."""
    shape = balls.array.shape
    est = np.zeros(balls.array.size, np.uint8)
    sections = set(idx)
    counts = {"cut": 0, "ambiguous": 0, "invisible": 0}
    for centre, radius in zip(balls.centres, balls.radii):
        voxels = ball(centre, radius, shape)
        cut = set(np.unravel_index(voxels, shape)[0].tolist()) & sections
        if not cut:
            counts["invisible"] += 1
            continue
        counts["cut"] += 1
        if len(cut) == 1:
            (x,) = cut
            mirror = centre.copy()
            mirror[0] = (2 * x - centre[0]) % shape[0]
            twin = ball(mirror, radius, shape)
            if set(np.unravel_index(twin, shape)[0].tolist()) & sections == cut:
                counts["ambiguous"] += 1
                voxels = np.intersect1d(voxels, twin)
        est[voxels] = 1
    return est.reshape(shape), counts


def main(argv: list[str] | None = None) -> None:
    p = _bench.parser(__doc__, out="anchors_ceiling.json")
    p.add_argument("--cases", default="spheres,carbonate")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--carbonate", default=str(_bench.CARBONATE))
    a = p.parse_args(argv)
    shape = (a.size,) * 3
    layouts = {"every 8": {"every": 8, "hold_out_every": None}, "hold out every 8": {"every": 8, "hold_out_every": 8}}
    results = {}
    for case in a.cases.split(","):
        make_truth, facts = anchors.make_case(case, a, shape)
        truths = [make_truth(a.seed + 1000 + i) for i in range(a.count)]
        results[case] = {"truth": facts["truth"], "layouts": {}}
        for name, lay in layouts.items():
            idx = anchors.sections(argparse.Namespace(size=a.size, **lay))
            rows = []
            for i, balls in enumerate(truths):
                est, counts = section_oracle(balls, idx)
                acc = {m: anchors.accuracy(v, balls.array, idx)
                       for m, v in (("oracle", est), ("interpolation", anchors.interpolate(balls.array, idx)))}
                rows.append({"truth": i, "balls": counts, **{m: {"all": v["all"], "between": v["between"]}
                                                            for m, v in acc.items()}})
                print(f"{case} {name} truth {i}: oracle {acc['oracle']['between']:.3f}, interpolation "
                      f"{acc['interpolation']['between']:.3f}, balls {counts}", flush=True)
            results[case]["layouts"][name] = {"per_volume": rows, "summary": anchors.summarise(rows)}
    _bench.write_result(a.out or _bench.RESULTS / "anchors_ceiling.json",
                        {"what": "section oracle vs interpolation (benchmarks/anchors_ceiling.py docstring)",
                         "size": a.size, "count": a.count, "cases": results}, "cpu", __file__, argv)


if __name__ == "__main__":
    main()
