"""Error types that decide the exit code: bad input is 2, failed work is 1."""

from __future__ import annotations


class BadInput(Exception):
    """The user gave something unusable (file, field, value). One line, exit code 2."""


class WorkFailed(Exception):
    """The work itself failed (training error, unreachable host for an action). Exit code 1."""
