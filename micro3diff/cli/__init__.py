"""``m3d``: the command line. Each subcommand lives in its own module and is imported on use."""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" (modules under micro3diff.cli)
COMMANDS = {
    "info": "info:info",
    "models": "models:models",
    "synth": "synth:synth",
    "train": "train:train",
    "calibrate": "calibrate:calibrate",
    "sample2d": "sample2d:sample2d",
    "sample": "sample:sample",
    "evaluate": "evaluate:evaluate",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f"micro3diff.cli.{module}"), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="micro3diff")
def main() -> None:
    """micro3diff: 3D microstructures from 2D micrographs by multi-plane diffusion."""
