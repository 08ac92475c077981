"""Shared CLI plumbing: user errors become one line and exit status 2; shared options; feedback (-q, bars)."""
from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Callable

import click

from ..errors import UserError

if TYPE_CHECKING:
    from tqdm import tqdm

_QUIET = "micro3diff.quiet"  # click context meta key set by -q/--quiet


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


def _voxel_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    from ..io.arrays import voxel_size3

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


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[_QUIET] = value


def quiet_option(fn: Callable) -> Callable:
    """``-q/--quiet`` on a command: no progress bars and no per-file lines (see ``say``); errors still print."""
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                        help="No progress bars or per-file lines; errors are still printed.")(fn)


def _quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(_QUIET))


def show_progress() -> bool:
    """Progress bars are drawn only on a terminal (stderr is a TTY) and without -q."""
    isatty = getattr(sys.stderr, "isatty", None)
    return not _quiet() and callable(isatty) and bool(isatty())


def progress_bar(**kwargs) -> "tqdm":
    """A tqdm bar on stderr, shown as ``show_progress`` says, closed when the command ends (even on an error)."""
    from tqdm import tqdm

    bar = tqdm(file=sys.stderr, disable=not show_progress(), dynamic_ncols=True, **kwargs)
    click.get_current_context().call_on_close(bar.close)
    return bar


def say(message: str, err: bool = False) -> None:
    """A per-file line (``wrote ...``, ``skip ...``), printed above any progress bar; nothing under -q."""
    if not _quiet():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr if err else sys.stdout)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (None: torch's choice). UserError unless N >= 1."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
