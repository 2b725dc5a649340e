"""Domain errors raised by the data layer.

Repositories translate driver errors (integrity violations, missing rows) into these at their
boundary, chained with ``raise ... from``, so callers never handle SQLAlchemy exceptions.
"""


class PersistenceError(Exception):
    """Base of every data-layer error; ``detail`` is a sentence safe to show to the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(PersistenceError):
    """The object does not exist, or the acting user may not see it (the two are not told apart)."""


class ConflictError(PersistenceError):
    """The change would break a uniqueness or consistency rule (duplicate email, last participant)."""


class ForbiddenError(PersistenceError):
    """The acting user sees the object but may not make this change (a participant editing a topic)."""


class InvalidError(PersistenceError):
    """A value breaks a domain rule that the database checks (a participant id that names no user)."""
