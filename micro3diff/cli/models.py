"""``m3d models``: the shipped models and their cards' key numbers."""
from __future__ import annotations

import click

from ._common import quiet_option, user_errors


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@quiet_option
@user_errors
def models(as_json: bool) -> None:
    """List the shipped models (use a name as MODEL in m3d sample) with their measured error rates."""
    import json

    from ..api import list_models, model_card

    cards = [model_card(name) for name in list_models()]
    if as_json:
        click.echo(json.dumps(cards, indent=2))
        return
    for card in cards:
        errors = "; ".join(f"{m} {e['per_volume']} % per volume (floor {e['floor']}, shuffled {e['shuffled']})"
                           for m, e in card["errors"].items())
        click.echo(f"{card['name']}: {card['title']}\n    U-Net {card['parameters']} parameters, trained on "
                   f"{card['image_size']}^2 crops; {card['setting'] or 'sampler'}: error rates "
                   f"{errors or 'not measured'}; volume fraction {card['volume_fraction']}")
