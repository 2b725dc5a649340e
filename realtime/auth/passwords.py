"""Password hashing with Argon2id (argon2-cffi), run in a worker thread.

One hash takes tens of milliseconds of CPU and 64 MiB of memory with the library's default
parameters (RFC 9106 low-memory profile), so it runs in ``asyncio.to_thread`` to keep the event
loop free for WebSocket traffic while it works.
"""

from __future__ import annotations

import asyncio
import logging

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

logger = logging.getLogger(__name__)

# Longest accepted password. Argon2 takes any length, but an unbounded one lets a client buy
# seconds of CPU per request.
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8

_hasher = PasswordHasher()

# Verified against when the email is unknown or the user has no password, so a failed login
# costs the same time whether or not the account exists.
_UNUSABLE_HASH = _hasher.hash("cortex-core: no password set for this account")


async def hash_password(password: str) -> str:
    """Return the Argon2id hash of ``password`` in PHC string format."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except VerificationError:
        return False
    except InvalidHashError:
        logger.error("stored password hash is not a valid Argon2 hash; login rejected")
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password`` against ``password_hash``; a missing hash never matches.

    The check takes the same time with and without a stored hash.
    """
    if password_hash is None:
        await asyncio.to_thread(_verify, _UNUSABLE_HASH, password)
        return False
    return await asyncio.to_thread(_verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """Return whether the hash was made with weaker parameters than the current ones."""
    return _hasher.check_needs_rehash(password_hash)
