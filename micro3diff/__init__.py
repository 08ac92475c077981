"""micro3diff: statistically equivalent 3D microstructures from 2D micrographs (Micro3Diff).

Train an ordinary 2D DDPM on 2D images, then run multi-plane harmonized reverse diffusion on the
whole volume (Lee & Yun). Compiled kernels live in ``micro3diff._C`` (see ``micro3diff.ops``).

NumPy API (``micro3diff.api``): ``list_models()``, ``load_model(name_or_path)``,
``sample(model, shape, n=...) -> (n, D, H, W) uint8``, ``save(path, volume, voxel_size=...)``,
``evaluate(volumes, reference) -> EvaluationReport``.
"""
__version__ = "0.1.0"

import os as _os

# Set before torch's first allocation (so: when micro3diff is imported first, as by `m3d`), this makes PyTorch
# back CPU buffers of >= 2 MB with transparent huge pages (madvise): 512x fewer page faults on the U-Net's
# activations, a fresh allocation per op (fast-path sampling 8 % faster here; benchmarks/cpu_speed.py).
# THP_MEM_ALLOC_ENABLE=0 in the environment opts out.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .api import evaluate, list_models, load_model, sample, save  # noqa: E402

__all__ = ["__version__", "evaluate", "list_models", "load_model", "sample", "save"]
