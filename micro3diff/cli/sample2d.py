"""``m3d sample2d``: draw 2D images from a checkpoint by plain reverse diffusion (``sampling.write_images``)."""
from __future__ import annotations

import click

from ._common import quiet_option, say, user_errors


@click.command()
@click.argument("checkpoint")
@click.option("-n", "n", type=int, default=16, show_default=True, help="Number of images.")
@click.option("--size", type=int, help="Image side (default: the training image size).")
@click.option("--steps", type=int, help="Respaced sampling steps (default: all T).")
@click.option("--method", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prior", "prior_mode", type=click.Choice(["standard", "data"]), default="standard", show_default=True,
              help="x_T from N(0, I) or from q(x_T) on the training data's phase fractions (as m3d sample).")
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="grid.png (a tiled picture) or .npy/.tif (an (n, S, S) stack of phase labels).")
@quiet_option
@user_errors
def sample2d(checkpoint: str, n: int, size: int | None, steps: int | None, method: str, seed: int,
             prior_mode: str, device: str | None, out: str) -> None:
    """Draw N 2D images from CHECKPOINT (a file or shipped model name) by plain reverse diffusion."""
    from ..checks import number
    from ..sampling import write_images

    number("-n", n, lo=1)
    number("--size", size, lo=1)
    number("--seed", seed, lo=0)
    say(write_images(checkpoint, out, n=n, size=size, steps=steps, method=method, seed=seed, prior=prior_mode,
                     device=device), err=True)
