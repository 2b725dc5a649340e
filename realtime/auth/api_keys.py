"""API keys: long random bearer credentials for bots, stored only as a SHA-256 digest.

A key carries 256 bits from ``secrets``, so a fast hash is enough: the digest does not reveal the
key, and a plain digest can be looked up through an index. A slow password hash (Argon2) would
need the key's id in the credential to find the row and buys nothing against random keys.
"""

from __future__ import annotations

import hashlib
import secrets

# Every key starts with this, so keys are easy to spot in a leaked file and easy to tell from a JWT.
API_KEY_PREFIX = "ck_"
_RANDOM_BYTES = 32


def generate_api_key() -> str:
    """Return a new key: the prefix followed by 43 URL-safe base64 characters."""
    return API_KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def hash_api_key(key: str) -> str:
    """Return the hex SHA-256 digest under which ``key`` is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_api_key(credential: str) -> bool:
    """Return whether ``credential`` has the API key form (it may still be unknown or revoked)."""
    return credential.startswith(API_KEY_PREFIX)
