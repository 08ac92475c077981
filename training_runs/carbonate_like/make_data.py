"""Training data of the carbonate-like anchors case (issue 17): a 300 x 64 x 64 volume of the truth model that
benchmarks/anchors.py uses (1 - overlapping spheres, radius and phi fitted to the Li et al. 2018 micrograph's S2,
read at run time; seed 1, while the benchmark's truths use seeds 1100 + i).

  PYTHONPATH=benchmarks python training_runs/carbonate_like/make_data.py runs/carbonate_like/data.npy
"""
import sys

import numpy as np

from _bench import CARBONATE
from anchors import boolean_radius
from micro3diff.synth import generators as synth

phi, radius = boolean_radius(np.load(CARBONATE).astype(np.uint8))
volume = 1 - synth.overlapping_spheres((300, 64, 64), radius, 1 - phi, seed=1).array
np.save(sys.argv[1], volume.astype(np.uint8))
print(f"phi {phi:.4f}, radius {radius:.2f}: {sys.argv[1]} phase-1 fraction {volume.mean():.4f}")
