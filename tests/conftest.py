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


class Spy(torch.nn.Module):
    """A stand-in eps-model that records every input batch (B, C, h, w) and returns eps = x / 2."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, t):
        self.inputs.append(x.clone())
        return x / 2


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """Untrained tiny binary checkpoint (divisor 4) recorded as trained on 8^2 crops."""
    from micro3diff.io.checkpoint import save_checkpoint
    from micro3diff.diffusion.schedule import ScheduleConfig
    from micro3diff.diffusion.unet import UNET_PRESETS, UNet

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, UNet(UNET_PRESETS["tiny"]).state_dict(), UNET_PRESETS["tiny"], ScheduleConfig(),
                    data={"image_size": 8, "channels": 1}, training={})
    return path


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run fastest (and steadiest) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
