"""Errors the CLI reports as one clear line instead of a traceback.

The contract: a `UserError` is a problem with the user's input or setup that the message alone lets them
fix (a missing weight file, an unknown metric, a malformed prompts file). The CLI prints it as one line
and exits 2. Any other exception is a bug (ours, or in the user's own generator) and keeps its traceback.
Domain errors subclass `UserError` *and* the built-in type Python callers would expect (`ValueError`,
`KeyError`, `FileNotFoundError`), so `except ValueError` in a user's script keeps working.

This module is the bottom of the dependency graph: it imports nothing of paintbench.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or setup (exit status 2)."""


class InputError(UserError, ValueError):
    """Bad input data or options: a malformed file, a value out of range, an option that does not exist."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user has to provide is not where it was looked for."""


class UnknownNameError(UserError, KeyError):
    """A name (metric, suite, generator, preset) that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; a user reads it as a sentence
        return str(self.args[0]) if self.args else ""
