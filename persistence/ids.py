"""Message ids: version 7 UUIDs, which begin with the millisecond they were drawn in.

Ids drawn one after another sort in the same order, so a batch of new messages adds to the end
of the unique index on messages.id. Random (version 4) ids put each new message on a random page
of that index, and SQLite writes every page a commit touches to the WAL again. With batches of
six, storing a message into a 60,000-message table cost about 170 to 190 us with random ids and
140 us with these (two runs by hand on the machine of docs/benchmarks.md). Clients see an
ordinary UUID either way.
"""

from __future__ import annotations

import uuid

# uuid_utils generates them in Rust; the standard library has uuid7 only from Python 3.14.
from uuid_utils.compat import uuid7


def new_message_id() -> uuid.UUID:
    """Draw the id of a new message."""
    return uuid7()
