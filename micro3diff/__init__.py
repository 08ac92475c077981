"""micro3diff: statistically equivalent 3D microstructures from 2D micrographs (Micro3Diff).

Train an ordinary 2D DDPM on 2D images, then run multi-plane harmonized reverse diffusion on the
whole volume (Lee & Yun). Compiled kernels live in ``micro3diff._C`` (see ``micro3diff.ops``).
"""
__version__ = "0.1.0"
