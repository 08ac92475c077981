"""The files of one training run (only rank 0 writes; every file is written atomically).

```
RUN_DIR/config.json                          TrainConfig + world size + provenance
RUN_DIR/log.csv                              step, loss, lr, ema_decay, images_per_s, elapsed_s
RUN_DIR/model.safetensors (+ .json)          EMA weights of the newest checkpoint (io/checkpoint.py format)
RUN_DIR/latest.json                          {"step", "model", "state"}: the newest complete checkpoint
RUN_DIR/checkpoints/model_<step>.safetensors EMA weights (+ .json), the last ``keep`` kept
RUN_DIR/checkpoints/state_<step>.safetensors training state for --resume (+ .json, same content as its header)
RUN_DIR/samples/step_<step>.png              optional 2D sample grids (EMA model)
```
``latest.json`` is replaced only after both files of a checkpoint are complete, so a run killed at any moment
resumes from its last complete checkpoint.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

from ..errors import UserError
from ..io.checkpoint import save_checkpoint
from ..io.files import atomic_path, write_json
from .config import TrainConfig
from .state import save_state

LOG_FIELDS = ("step", "loss", "lr", "ema_decay", "images_per_s", "elapsed_s")


class RunDir:
    """The files of one training run (see the module docstring). Only rank 0 writes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.ckpt = self.root / "checkpoints"
        self.latest = self.root / "latest.json"
        self.log = self.root / "log.csv"

    def check(self, resume: bool) -> None:
        """UserError if the run dir cannot be used: unwritable, already a run (fresh), nothing to resume."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"run dir {self.root} exists and is not a folder")
        existing = self.root.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"cannot create run dir {self.root}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"run dir {self.root} is not writable")
        if resume and not self.latest.is_file():
            raise UserError(f"nothing to resume in {self.root} (no latest.json); start a run without --resume")
        if not resume and self.latest.is_file():
            raise UserError(f"{self.root} already holds a training run; use --resume to continue it or pick "
                            f"another output folder")

    def latest_state(self) -> tuple[int, Path]:
        """(step, state file) of the newest complete checkpoint."""
        try:
            info = json.loads(self.latest.read_text())
            return int(info["step"]), self.root / info["state"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.latest} is unreadable ({exc}); cannot resume") from None

    def stored_config(self) -> TrainConfig:
        """The config a run was started with (for --resume)."""
        try:
            return TrainConfig.from_dict(json.loads((self.root / "config.json").read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.root / 'config.json'} is unreadable ({exc}); cannot resume") from None

    def clean_partials(self) -> None:
        """Remove temporary files left by a killed writer (atomic_path names them ``.<name>.*.part*``)."""
        for folder in (self.root, self.ckpt, self.root / "samples"):
            if folder.is_dir():
                for p in folder.glob(".*.part*"):
                    p.unlink(missing_ok=True)

    def write_checkpoint(self, step: int, ema_sd: dict, tensors: dict, meta: dict, config: TrainConfig,
                         data: dict, training: dict) -> Path:
        """Write model_<step>, state_<step>, the stable copy, then latest.json; prune. Returns the model path."""
        model_path = self.ckpt / f"model_{step:07d}.safetensors"
        state_path = self.ckpt / f"state_{step:07d}.safetensors"
        save_checkpoint(model_path, ema_sd, config.unet, config.schedule, data, training)
        save_state(state_path, tensors, meta)
        for suffix in ("", ".json"):
            with atomic_path(self.root / f"model.safetensors{suffix}") as tmp:
                shutil.copyfile(f"{model_path}{suffix}", tmp)
        write_json(self.latest, {"step": step, "model": str(model_path.relative_to(self.root)),
                                 "state": str(state_path.relative_to(self.root))})
        for kind in ("model", "state"):
            for old in sorted(self.ckpt.glob(f"{kind}_*.safetensors"))[:-config.keep]:
                old.unlink(missing_ok=True)
                Path(f"{old}.json").unlink(missing_ok=True)
        return model_path

    def trim_log(self, step: int) -> None:
        """Drop log rows after ``step`` (a fresh start, or rows of a run killed after its last checkpoint)."""
        if not self.log.is_file():
            return
        text = self.log.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # a row cut short by a kill
        rows = [r for r in csv.DictReader(lines) if int(r["step"]) <= step]
        with atomic_path(self.log) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)

def append_log(path: Path, row: dict) -> None:
    """Append one row to log.csv (a header first when the file is new)."""
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
