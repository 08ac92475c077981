"""Shared CLI plumbing: user errors become one line and exit status 2; shared options."""
from __future__ import annotations

import functools
from typing import Callable

import click

from ..errors import UserError


class CliError(click.ClickException):
    """One-line error, exit status 2."""

    exit_code = 2


def user_errors(fn: Callable) -> Callable:
    """Decorator for command callbacks: UserError -> ``Error: <message>`` and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise CliError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was written", err=True)
            raise SystemExit(130) from None

    return wrapper


def pick_device(name: str | None) -> "torch.device":  # noqa: F821
    """``--device`` value (None/"auto" -> cuda if available else cpu) as a torch.device; UserError if unusable."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but torch sees no CUDA device")
    return device


def _voxel_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    from ..io import voxel_size3

    if value is None:
        return None
    try:
        return voxel_size3([float(v) for v in value.replace(",", " ").split()])
    except (ValueError, UserError):
        raise click.BadParameter(f"one positive number or three (d,h,w), got {value!r}") from None


def voxel_size_option(default_note: str = "") -> Callable:
    """``--voxel-size S`` or ``D,H,W`` (-> (d, h, w) or None) and ``--unit`` (None when not given)."""

    def decorate(fn: Callable) -> Callable:
        fn = click.option("--unit", help="Unit of --voxel-size, e.g. um or nm (default: um).")(fn)
        return click.option("--voxel-size", callback=_voxel_size, metavar="S|D,H,W",
                            help=f"Voxel size in --unit: one number (cubic voxels) or d,h,w{default_note}.")(fn)

    return decorate
