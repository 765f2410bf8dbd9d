"""`mailer preview`: exactly what a contact would receive."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli import _LazyWorkspace, cli, pass_workspace, warn
from mailer.contacts.addresses import InvalidAddress, normalise_address
from mailer.contacts.model import load_contact
from mailer.errors import MailerError, SettingsError


@cli.command()
@click.argument("campaign")
@click.argument("step")
@click.option("--contact", "email", required=True, help="The contact to render for.")
@click.option("--variant", help="An A/B variant of the step (its name in settings).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the whole message (.eml) to this file.")  # fmt: skip
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Write only the HTML part to this file, to open in a browser.")  # fmt: skip
@click.option("--no-track", is_flag=True, help="Leave links as written (no click tracking).")
@pass_workspace
def preview(
    lazy: _LazyWorkspace, campaign: str, step: str, email: str, variant: str | None,
    out: Path | None, html_file: Path | None, no_track: bool,
) -> None:  # fmt: skip
    """Render STEP of CAMPAIGN for one contact, exactly as it would be sent: headers, both
    parts, tracked links and the DKIM signature. Prints the message (.eml) unless --out or
    --html says where to write it. For a broadcast, STEP is `broadcast`."""
    if out and html_file:
        raise click.UsageError("--out and --html are alternatives: give one")
    workspace = lazy.get()
    settings = workspace.settings
    if campaign not in settings.campaigns:
        known = ", ".join(settings.campaigns) or "none"
        raise SettingsError(f"no campaign '{campaign}' in {settings.source} (campaigns: {known})")
    chosen = settings.campaigns[campaign].step(step)
    try:
        address = normalise_address(email)
    except InvalidAddress as error:
        raise MailerError(str(error)) from None
    with workspace.engine.connect() as connection:
        contact = load_contact(connection, address)
    if contact is None:
        raise MailerError(f"{address}: no such contact; import it first (mailer import)")
    message = workspace.renderer.render(campaign, chosen, contact, f"preview-{contact.id}",
                                        variant, track=not no_track)  # fmt: skip
    warn(f"To: {message.recipient}  Subject: {message.subject}  "
         f"({len(message.data)} bytes, {len(message.links)} tracked links)")  # fmt: skip
    if out:
        out.write_bytes(message.data)
        warn(f"written to {out}")
    elif html_file:
        html_file.write_text(message.html, encoding="utf-8")
        warn(f"HTML written to {html_file}")
    else:
        click.echo(message.data.decode("utf-8", "replace"), nl=False)
