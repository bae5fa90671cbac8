"""
Secrets encrypted at rest: broker passwords are stored as Fernet tokens
(AES-128-CBC with an HMAC-SHA256, from the ``cryptography`` package), under
keys that only the environment holds.

``TRADEBOT_SECRET_KEY`` is one key made by ``tradebot secret-key``, or several
separated by commas while the key is rotated: the first encrypts, any of them
decrypts. No message of this module ever holds a key or a plain secret.
"""

import os
from typing import Mapping, Optional

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: The environment variable holding the key(s).
KEY_ENV = "TRADEBOT_SECRET_KEY"


class CredentialsError(Exception):
    """A secret cannot be encrypted or decrypted; the message says why and
    names `KEY_ENV`, never a key or a secret."""


class MissingKey(CredentialsError):
    """`KEY_ENV` is not set (or holds no key)."""


class InvalidKey(CredentialsError):
    """An item of `KEY_ENV` is not a Fernet key."""


class WrongKey(CredentialsError):
    """No key of `KEY_ENV` opens a stored secret: it was encrypted under
    another key, or altered."""


def new_key() -> str:
    """A fresh random key (32 bytes, URL-safe base64), for `KEY_ENV`."""
    return Fernet.generate_key().decode("ascii")


class Keyring:
    """The keys of `KEY_ENV`: encrypts with the first, decrypts with any.
    Its repr shows how many keys it holds, never a key."""

    def __init__(self, keys):
        keys = list(keys)
        if not keys:
            raise MissingKey(f"{KEY_ENV} is not set; make a key with `tradebot secret-key`")
        fernets = []
        for number, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                which = f"key {number} of {len(keys)}" if len(keys) > 1 else "its key"
                raise InvalidKey(
                    f"{KEY_ENV}: {which} is not a key (32 bytes in URL-safe base64, "
                    "as `tradebot secret-key` prints)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.size = len(fernets)

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> "Keyring":
        """The keyring of `KEY_ENV` in `environ` (default: this process's);
        raises `MissingKey` or `InvalidKey`."""
        text = (os.environ if environ is None else environ).get(KEY_ENV, "")
        return cls(item.strip() for item in text.split(",") if item.strip())

    def __repr__(self) -> str:
        return f"<Keyring of {self.size} key(s)>"

    def encrypt(self, secret: str) -> str:
        """`secret` encrypted under the first key, as ASCII text."""
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The secret `token` holds; raises `WrongKey` if no key opens it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise WrongKey(
                f"no key in {KEY_ENV} opens the stored secret (was it encrypted under another key?)"
            ) from None

    def rotate(self, token: str) -> str:
        """`token` encrypted again under the first key; raises `WrongKey`
        if no key opens it."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise WrongKey(
                f"no key in {KEY_ENV} opens the stored secret (was it encrypted under another key?)"
            ) from None


def encrypt(secret: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """`secret` encrypted under the first key of `KEY_ENV`; raises
    `CredentialsError` when there is no usable key."""
    return Keyring.from_environment(environ).encrypt(secret)


def decrypt(token: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The secret a stored `token` holds, opened with the keys of `KEY_ENV`;
    raises `CredentialsError` (`MissingKey`, `InvalidKey`, `WrongKey`)."""
    return Keyring.from_environment(environ).decrypt(token)
