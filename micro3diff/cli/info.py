"""``m3d info``: versions, which kernels are built, the device that would be used."""
from __future__ import annotations

import click

from ._common import quiet_option, user_errors


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@quiet_option
@user_errors
def info(as_json: bool) -> None:
    """Show versions, compiled-kernel status and the default device."""
    import json

    from ..devices import machine_facts

    facts = machine_facts()
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    k = facts["kernels"]
    rows = [
        ("micro3diff", facts["micro3diff"]),
        ("torch", f"{facts['torch']} (CUDA {facts['torch_cuda'] or 'none'})"),
        ("python", facts["python"]),
        ("CPU kernels", "built" if k["cpu_kernels"] else "NOT built (reference fallback)"),
        ("CUDA kernels", "built" if k["cuda_kernels"] else "not built"),
        ("device", facts["device"] + (f" ({facts['gpu']})" if "gpu" in facts else "")),
    ]
    if k["load_error"]:
        rows.append(("load error", k["load_error"]))
    for key, val in rows:
        click.echo(f"{key:>13}: {val}")
