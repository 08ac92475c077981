"""The only import of the compiled module ``micro3diff._C``.

``HAS_EXT`` says whether it loaded; ``has_kernel(op, device_type)`` whether an op has a compiled
kernel for a device type ("cpu", "cuda"); ``build_info()`` summarises both for ``m3d info``.
"""
from __future__ import annotations

import os

import torch

INSTALL_HINT = (
    "micro3diff's compiled kernels are not built; reinstall with "
    "`pip install --no-build-isolation .` (torch must be installed first)"
)

try:
    from . import _C  # noqa: F401  (loading the library registers the torch ops)

    HAS_EXT = True
    LOAD_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    HAS_EXT = False
    LOAD_ERROR = str(exc)

if os.environ.get("M3D_REQUIRE_EXT") == "1" and not HAS_EXT:
    raise ImportError(f"M3D_REQUIRE_EXT=1 but micro3diff._C failed to load: {LOAD_ERROR}")

_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def has_kernel(op: str, device_type: str) -> bool:
    """True if ``micro3diff::<op>`` has a compiled kernel for ``device_type`` ("cpu"/"cuda")."""
    if not HAS_EXT or device_type not in _DISPATCH_KEY:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"micro3diff::{op}", _DISPATCH_KEY[device_type])


def build_info() -> dict:
    """What was built: {"extension_loaded", "cpu_kernels", "cuda_kernels", "load_error"}."""
    return {
        "extension_loaded": HAS_EXT,
        "cpu_kernels": has_kernel("fused_step", "cpu"),
        "cuda_kernels": has_kernel("fused_step", "cuda"),
        "load_error": LOAD_ERROR,
    }
