"""``m3d calibrate``: measure a checkpoint's x0-hat moments on its training images (``training.calibrate``)."""
from __future__ import annotations

import click

from ..training.data import AXIS_CHOICES
from ._common import quiet_option, say, user_errors


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Write the calibrated checkpoint here (default: in place).")
@click.option("--axis", type=click.Choice(AXIS_CHOICES), default="0", show_default=True,
              help="Slice 3D files along this axis or all three, as for m3d train.")
@click.option("--threshold", help="Binarise non-binary images at this value, or 'otsu', as for m3d train.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the crops and the noise.")
@quiet_option
@user_errors
def calibrate(checkpoint: str, data: tuple[str, ...], out: str | None, axis: str, threshold: str | None,
              seed: int) -> None:
    """Record CHECKPOINT's x0-hat moments on the training images DATA, for the volume-fraction control.

    m3d train does this at its last step; use this for a checkpoint made before (it then samples with the
    phase-fraction shift alone, and says so in each volume's sidecar). The weights are kept as stored.

    \b
    Example:
      m3d calibrate runs/spheres/model.safetensors volume.tif --axis all
    """
    from ..training.calibrate import calibrate as run

    say(f"wrote {run(checkpoint, data, out=out, axis=axis, threshold=threshold, seed=seed)}", err=True)
