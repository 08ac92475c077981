"""Build micro3diff and its compiled ops (micro3diff._C).

CPU kernels are always built. CUDA kernels are added when torch itself was built with CUDA
(``torch.version.cuda``) and a CUDA toolkit is found, not when a GPU happens to be visible.

Environment overrides:
  M3D_CUDA=1 / M3D_CUDA=0   force the CUDA kernels on / off
  TORCH_CUDA_ARCH_LIST      target archs (default "8.0;9.0" when no GPU is visible)
  M3D_DEBUG=1               -O0 -g builds
"""
import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised by users, not tests
    sys.exit(
        "micro3diff: torch is not importable in this build environment.\n"
        "Install torch first (CPU: pip install torch==2.13.0), then build without isolation:\n"
        "    pip install --no-build-isolation ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    flag = os.environ.get("M3D_CUDA", "").strip()
    if flag in ("0", "off", "false"):
        return False
    torch_has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("1", "on", "true"):
        if not torch_has_cuda:
            sys.exit("micro3diff: M3D_CUDA=1 but this torch has no CUDA or no CUDA toolkit was found (CUDA_HOME).")
        return True
    return torch_has_cuda


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extension():
    debug = os.environ.get("M3D_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # -fopenmp: at::parallel_for is serial without it. csrc/philox.h: -ffp-contract=off keeps float ops unfused
    # (same bits as CUDA and the reference), -fno-math-errno lets sqrt vectorise, -fno-trapping-math lets float
    # selects (clamps) vectorise (no value changes: FP exceptions are never inspected).
    cxx = opt + ["-Wall", "-Wno-unused-function", "-fopenmp", "-ffp-contract=off", "-fno-math-errno",
                 "-fno-trapping-math"]
    sources = _sources("csrc/ops.cpp") + _sources("csrc/cpu/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc")]
    if not _want_cuda():
        return CppExtension("micro3diff._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx},
                            extra_link_args=["-fopenmp"])
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    sources += _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    nvcc = opt + ["-lineinfo"]
    return CUDAExtension(
        "micro3diff._C",
        sources,
        include_dirs=include_dirs,
        define_macros=[("M3D_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
