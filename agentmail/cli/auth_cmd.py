"""`agentmail auth`: authorise agentmail for a real Gmail address."""

from __future__ import annotations

import typer

from agentmail.cli.context import check_address, obj


def auth_command(
    ctx: typer.Context,
    email: str = typer.Option(..., "--email", "-e", metavar="ADDRESS",
                              help="The Gmail address to authorise."),
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Print the consent URL instead of opening a browser "
        "(forward the port, or open it on this machine)."),
    port: int = typer.Option(0, "--port", min=0, max=65535,
                             help="Local port of the OAuth redirect (0: any free one)."),
) -> None:
    """Run Google's consent flow and store the token (mode 0600) for `agentmail run --email`.

    Needs credentials.json: an OAuth client of type "Desktop app" from your Google Cloud
    project (see the README, "Using real Gmail"). Only the gmail.modify scope is requested.
    """
    from agentmail import auth

    c = obj(ctx)
    email = check_address(email)
    settings = c.settings()
    auth.authorize(email, settings.path(settings.credentials_path),
                   settings.path(settings.tokens_dir), open_browser=not no_browser, port=port,
                   echo=c.say)
    c.say(f"next: agentmail run --email {email}")


def register(app: typer.Typer) -> None:
    app.command("auth")(auth_command)
