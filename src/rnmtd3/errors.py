"""The library's own exceptions: the CLI maps each to one line and an exit code, nothing else does."""


class RnmError(Exception):
    """Base of every error the library raises on purpose."""


class UsageError(RnmError, ValueError):
    """Bad user input (a pattern, env, key, value or path); the CLI exits 2 and writes nothing."""


class DatabaseError(RnmError):
    """A database that cannot be used: unreadable, foreign, or of a newer schema."""


class IncompleteCurve(RnmError):
    """A run reached its last step without every evaluation its protocol defines: it is never marked done."""


class TransientDatabaseError(DatabaseError):
    """A database error that waiting may cure (a full disk, a lost connection): a run failing with it backs off."""
