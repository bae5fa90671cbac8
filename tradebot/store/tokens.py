"""
Account tokens: random, shown once, stored only as a hash.
"""

import hashlib
import hmac
import secrets
from typing import Optional


def new_token() -> str:
    """A fresh URL-safe token carrying 192 random bits."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """The hex SHA-256 of `token`: what the database keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: Optional[str]) -> bool:
    """True if `token` hashes to `stored_hash`, compared in constant time;
    False for a revoked token (no hash)."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_token(token), stored_hash)
