"""The key the service opens sealed password-reset tokens with (choreo.sealing): its own
X25519 private key, whose public key the user service seals each token to."""

from __future__ import annotations

from choreo.sealing import Opener, SealingKeyError
from choreo.service import ConfigurationError
from notification_service.config import Settings

NO_KEY_WARNING = (
    "opens no sealed password-reset token (NOTIFICATION_SEALING_KEY is unset): a sealed one is "
    "dead-lettered unsent, so the user service must send them in clear"
)


def load_sealing_key(settings: Settings) -> Opener | None:
    """NOTIFICATION_SEALING_KEY, which prod requires; None outside prod without it. Refuses a
    key that cannot be read, and one whose public key is not CHOREO_NOTIFICATION_KEY (when set):
    the user service would seal every token to a key this service cannot open."""
    if settings.sealing_key is None:
        if settings.env == "prod":
            raise ConfigurationError(
                "NOTIFICATION_SEALING_KEY must be set when CHOREO_ENV=prod: the user service "
                "seals password-reset tokens to this service's key (`choreo event-keys` makes "
                "a key pair)"
            )
        if settings.notification_key is not None:
            raise ConfigurationError(
                "CHOREO_NOTIFICATION_KEY is set but NOTIFICATION_SEALING_KEY is not: every "
                "password-reset token would be sealed to a key this service cannot open"
            )
        return None
    try:
        opener = Opener.from_pem(settings.sealing_key.get_secret_value())
    except SealingKeyError as error:
        raise ConfigurationError(f"NOTIFICATION_SEALING_KEY: {error}") from None
    if settings.notification_key is not None and settings.notification_key != opener.public_key:
        raise ConfigurationError(
            "CHOREO_NOTIFICATION_KEY is not the public key of NOTIFICATION_SEALING_KEY "
            f"({opener.public_key}): every password-reset token would be sealed to a key this "
            "service cannot open"
        )
    return opener
