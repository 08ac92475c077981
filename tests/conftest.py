"""Test session guards: with M3D_REQUIRE_EXT=1 (CI) the session fails if the compiled module did not load."""
import os

import pytest
import torch


def pytest_sessionstart(session):
    if os.environ.get("M3D_REQUIRE_EXT") == "1":
        from micro3diff import _ext

        if not (_ext.HAS_EXT and _ext.has_kernel("fused_step", "cpu")):
            raise pytest.UsageError(f"M3D_REQUIRE_EXT=1 but the compiled CPU kernels are missing: {_ext.LOAD_ERROR}")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def package_env(**extra: str) -> dict:
    """Environment for a subprocess that must import the same micro3diff as this session (installed or in-tree).

    Run the subprocess with a cwd outside the repository too, or ``python -c`` imports the source tree first.
    """
    import micro3diff

    return {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(micro3diff.__file__)), **extra}
