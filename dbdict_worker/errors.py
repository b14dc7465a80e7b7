"""Exceptions shared by the library and the commands.

Each carries the exit code its command maps it to: 1 for an operational failure, 2 for a
usage error. Messages are one line and never contain a password.
"""
from __future__ import annotations


class DbdictError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class UsageError(DbdictError):
    """The caller asked for something malformed (bad parameter, bad option value)."""

    exit_code = 2


class StateError(UsageError, ValueError):
    """A state key or value that cannot be stored (the message names the key)."""


class ResolveError(DbdictError, ImportError):
    """A dotted path (experiment or builder) that cannot be imported."""


class DatabaseUnavailable(DbdictError):
    """The database could not be reached, even after retries, or refused our credentials."""


class SchemaError(DbdictError):
    """The schema is missing or not at the revision this code needs."""


class NotFound(DbdictError):
    """A table or a job that does not exist."""


class LostOwnership(DbdictError):
    """The caller no longer owns the job (it was requeued, cancelled or re-booked)."""
