"""User errors raised by the application layer (config, CLI, environment).

They share `seq2seq.errors.DataError`'s shape (problem + fix); the CLI prints either in one
line and exits 2.
"""

from __future__ import annotations

from seq2seq.errors import DataError


class UserError(DataError):
    """A config, command-line or environment problem the user can fix."""
