"""Feedback: -q on every command, progress bars only on a terminal, one bar across ``m3d sample --count``."""
import sys

import click
import pytest
import tqdm
from click.testing import CliRunner

from micro3diff.cli import COMMANDS, _common, main
from micro3diff.cli._common import quiet_option, show_progress

FAST = ["--steps", "3", "--harmonize", "1"]


class Stream:
    def __init__(self, tty):
        if tty is not None:
            self.isatty = lambda: tty

    def write(self, s):
        return len(s)

    def flush(self):
        pass


@click.command()
@quiet_option
def probe():
    click.echo(show_progress())


@pytest.mark.parametrize("stderr, args, shown", [(True, [], True), (True, ["-q"], False), (True, ["--quiet"], False),
                                                 (False, [], False), (None, [], False)])
def test_bars_only_on_a_terminal_and_never_with_quiet(monkeypatch, capsys, stderr, args, shown):
    monkeypatch.setattr(sys, "stderr", Stream(stderr))  # None: a stream without isatty (tqdm's disable=None shows bars)
    probe.main(args, standalone_mode=False)
    assert capsys.readouterr().out.strip() == str(shown)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_quiet(command):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0 and "-q, --quiet" in res.output


def test_sample_one_bar_across_count_and_quiet(ckpt, tmp_path, monkeypatch):
    bars = []

    class Bar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setattr(_common, "show_progress", lambda: True)  # as on a terminal
    res = CliRunner().invoke(main, ["sample", str(ckpt), "--count", "3", "--format", "npy", "-o", str(tmp_path), *FAST])
    assert res.exit_code == 0, res.output
    assert [(b.total, b.n) for b in bars] == [(9, 9)] and res.output.count("wrote tiny_") == 3
    bars.clear()
    monkeypatch.setattr(_common, "show_progress", show_progress)
    res = CliRunner().invoke(main, ["sample", str(ckpt), "--count", "4", "--format", "npy", "-o", str(tmp_path),
                                    "-q", *FAST])
    assert res.exit_code == 0 and res.output == "" and (tmp_path / "tiny_3.npy").exists()
    assert [(b.total, b.disable) for b in bars] == [(3, True)]  # three volumes skipped, one made; no bar drawn
    res = CliRunner().invoke(main, ["sample", str(ckpt), "--count", "0", "-q"])
    assert res.exit_code == 2 and res.output.startswith("Error: ")  # errors still print under -q
