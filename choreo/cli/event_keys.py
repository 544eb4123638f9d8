"""`choreo event-keys`: a new set of event signing keys, as environment variables."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from choreo.cli.output import fail, prose
from choreo.signing import generate_keys


def register(app: typer.Typer) -> None:
    app.command(name="event-keys", help=prose(event_keys.__doc__))(event_keys)


def event_keys(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the variables to this file (created with mode 600; an existing file "
            "is refused) instead of printing them.",
        ),
    ] = None,
) -> None:
    """Make a new Ed25519 key for each publishing service (user, order, inventory, payment)
    and print, as an env file, each one's EVENT_SIGNING_KEY and the CHOREO_EVENT_KEYS every
    service verifies with. Each service needs CHOREO_EVENT_KEYS and its own key only: give
    the private keys to their services alone (a secret store, a Kubernetes Secret each)."""
    signers, keys = generate_keys()
    lines = [
        "# Choreo event signing keys (choreo event-keys). Each *_EVENT_SIGNING_KEY is a secret",
        "# of that service alone; CHOREO_EVENT_KEYS (public keys) goes to every service.",
        f"CHOREO_EVENT_KEYS={shlex.quote(keys.to_json())}",
    ]
    lines += [
        f"{service.upper()}_EVENT_SIGNING_KEY={shlex.quote(signer.to_pem())}"
        for service, signer in signers.items()
    ]
    text = "\n".join(lines) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        fail(f"{output} exists; choose another file or remove it first")
    except OSError as error:
        fail(f"cannot write {output}: {error.strerror}")
    typer.echo(f"wrote {len(signers)} signing keys and CHOREO_EVENT_KEYS to {output}")
