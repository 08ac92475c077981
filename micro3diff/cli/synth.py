"""``m3d synth``: write a synthetic microstructure (volume or stack of 2D images) and its JSON sidecar
(``synth.files.write_synth``)."""
from __future__ import annotations

import click

from ..synth.files import KINDS
from ._common import quiet_option, say, user_errors, voxel_size_option


@click.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Output .npy, .tif/.tiff (ImageJ stack, two phases as 0/255), .vti (or .png for one 2D image).")
@click.option("--shape", help="Array shape: D,H,W for a volume or H,W for images (default: the kind's).")
@click.option("--size", type=int, help="Cube side (or square side with --count) instead of --shape.")
@click.option("--count", type=int,
              help="Write a stack of COUNT independent 2D images (N, H, W), 64 x 64 unless --shape H,W.")
@click.option("--seed", type=int, help="Random seed (default: fresh, recorded in the sidecar).")
@click.option("--volume-fraction",
              help="Target fraction of phase 1 (overlapping-spheres: the matrix; multiphase: one per phase, a,b).")
@click.option("--diameter", help="Mean sphere diameter in voxels (multiphase: one per phase).")
@click.option("--diameter-sd", help="Standard deviation of the diameter (multiphase: one per phase).")
@click.option("--radius", type=float, help="overlapping-spheres: sphere radius in voxels.")
@click.option("--grain-sizes", help="polycrystal: grain equivalent diameters, e.g. 6,9,12.")
@click.option("--semi-axes", help="ellipsoids: semi-axes along D,H,W (or H,W), e.g. 12,4,4.")
@click.option("--overlapping/--no-overlapping", default=None, help="ellipsoids: Boolean model or non-overlapping.")
@click.option("--periodic/--no-periodic", default=None, help="Wrap around the box (default: periodic).")
@voxel_size_option(" (recorded in the TIFF / .vti and the sidecar)")
@quiet_option
@user_errors
def synth(
    kind: str, out: str, shape: str | None, size: int | None, count: int | None, seed: int | None,
    voxel_size: tuple[float, float, float] | None, unit: str | None, **options
) -> None:
    """Generate a synthetic microstructure of KIND and write it with a JSON sidecar OUT.json.

    \b
    Paper case I:  m3d synth spheres -o spheres.tif            (300 x 64 x 64, d = 15 +- 4, 20 %)
    Paper case II: m3d synth polycrystal --count 300 -o grains.tif   (300 images 64 x 64)
    """
    from ..synth.files import write_synth

    say(write_synth(kind, out, shape=shape, size=size, count=count, seed=seed, voxel_size=voxel_size, unit=unit,
                    **options))
