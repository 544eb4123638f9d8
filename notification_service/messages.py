"""What each notification says: the Jinja2 templates of `templates/`, rendered with its facts.

Each kind has `<kind>.txt` (the plain-text body; it sets `subject`) and `<kind>.html` (the
same words as HTML, autoescaped). The plain text is also the in-app notification's body. Each
kind that may go by SMS has `<kind>.sms`: one line, no name, at most SMS_LENGTH characters (one
SMS segment); a password reset has none — its link carries a secret, and goes by e-mail only.
Subjects are fixed text and our own references (`#1A2B3C4D`), never what a user typed (a name,
a product's name): a subject is the line a phishing message needs, and bodies are where a
user's words are shown, as words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from notification_service.domain import PREFERENCE_OF, Kind

# One GSM-7 segment: a longer text is cut (with an ellipsis) rather than sent as several.
SMS_LENGTH: Final = 160


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    text: str
    html: str


class Renderer:
    """Renders notifications; every template is loaded up front, so a missing one fails the
    service at start-up rather than at its first notification of that kind."""

    def __init__(self) -> None:
        self._environment = Environment(
            loader=PackageLoader("notification_service", "templates"),
            autoescape=select_autoescape(["html"], default_for_string=False),
            undefined=StrictUndefined,  # a fact missing from the context is an error
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # The templates ship with the package and never change under a running service:
            # no check of each file's modification time on every render.
            auto_reload=False,
        )
        for kind in Kind:
            self._environment.get_template(f"{kind}.txt")
            self._environment.get_template(f"{kind}.html")
            if kind in PREFERENCE_OF:
                self._environment.get_template(f"{kind}.sms")

    def render(self, kind: Kind, context: Mapping[str, object]) -> Message:
        text_template = self._environment.get_template(f"{kind}.txt")
        module = text_template.make_module(dict(context))
        # The template's `{% set subject %}`, on one line.
        subject = " ".join(str(getattr(module, "subject")).split())  # noqa: B009
        html = self._environment.get_template(f"{kind}.html").render(context, subject=subject)
        return Message(subject=subject, text=str(module).strip() + "\n", html=html)

    def render_sms(self, kind: Kind, context: Mapping[str, object]) -> str:
        """The SMS text of a notification: one line, at most SMS_LENGTH characters."""
        text = " ".join(self._environment.get_template(f"{kind}.sms").render(context).split())
        return text if len(text) <= SMS_LENGTH else text[: SMS_LENGTH - 3].rstrip() + "..."
