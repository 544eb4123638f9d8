"""`choreo event-keys`: a new set of event signing keys and the notification service's sealing
key pair, as environment variables."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from choreo.cli.output import fail, prose
from choreo.sealing import Opener
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
    and a new X25519 sealing key for the notification service, and print, as an env file,
    each publisher's EVENT_SIGNING_KEY, the CHOREO_EVENT_KEYS every service verifies with,
    NOTIFICATION_SEALING_KEY, and CHOREO_NOTIFICATION_KEY, the public key the user service
    seals password-reset tokens to. Each service needs the public keys and its own private
    key only: give the private keys to their services alone (a secret store, a Kubernetes
    Secret each)."""
    signers, keys = generate_keys()
    opener = Opener.generate()
    lines = [
        "# Choreo event signing keys (choreo event-keys). Each *_EVENT_SIGNING_KEY is a secret",
        "# of that service alone; CHOREO_EVENT_KEYS (public keys) goes to every service.",
        f"CHOREO_EVENT_KEYS={shlex.quote(keys.to_json())}",
    ]
    lines += [
        f"{service.upper()}_EVENT_SIGNING_KEY={shlex.quote(signer.to_pem())}"
        for service, signer in signers.items()
    ]
    lines += [
        "# The notification service's sealing key: NOTIFICATION_SEALING_KEY is its secret alone;",
        "# CHOREO_NOTIFICATION_KEY (its public key) goes to the user and notification services.",
        f"CHOREO_NOTIFICATION_KEY={opener.public_key}",
        f"NOTIFICATION_SEALING_KEY={shlex.quote(opener.to_pem())}",
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
    typer.echo(
        f"wrote {len(signers)} signing keys, CHOREO_EVENT_KEYS and the notification service's "
        f"sealing key pair to {output}"
    )
