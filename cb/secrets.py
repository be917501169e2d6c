"""Secrets at rest: provider and agent keys sealed with CB_SECRET_KEY.

With ``CB_SECRET_KEY`` set, :meth:`SecretBox.seal` returns ``"fernet:<token>"`` (Fernet:
AES-128-CBC + HMAC-SHA256, key = SHA-256 of CB_SECRET_KEY); without it values are kept
as given (development). :meth:`SecretBox.open` reverses either form. Every opened
secret is registered with the log redactor, so it can never be printed.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from cb.errors import CircuitBreakerError
from cb.logs import redactor

PREFIX = "fernet:"


class SecretUnavailable(CircuitBreakerError):
    """A sealed secret cannot be opened: CB_SECRET_KEY is missing or different."""

    code = "SECRET_UNAVAILABLE"
    http_status = 500


class SecretBox:
    """Seal and open secrets with a key derived from CB_SECRET_KEY."""

    def __init__(self, secret_key: str | None):
        self._fernet = None
        if secret_key:
            derived = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
            self._fernet = Fernet(derived)

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: str | None) -> str | None:
        if not plain:
            return plain
        redactor.add(plain)
        if self._fernet is None:
            return plain
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if not stored or not stored.startswith(PREFIX):
            redactor.add(stored)
            return stored
        if self._fernet is None:
            raise SecretUnavailable("a stored secret is encrypted but CB_SECRET_KEY is not set")
        try:
            plain = self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnavailable("a stored secret was encrypted with a different CB_SECRET_KEY") from None
        redactor.add(plain)
        return plain
