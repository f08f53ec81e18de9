"""The error types every command turns into one line, ``error: <file or option>: <problem>``.

A :class:`UsageError` (a bad option or argument) exits with 2; an :class:`InputError` (a file or
model that cannot be used) with 1. :class:`audiodiff.audio.AudioError` is an input error too.
"""

from __future__ import annotations

import os

EXIT_FAILED_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


class InputError(ValueError):
    """A file, folder or model that cannot be used. The message is one line and names it."""

    exit_code = EXIT_FAILED_INPUT

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UsageError(InputError):
    """An option or argument that cannot work, named as the user typed it (``--batch-size``)."""

    exit_code = EXIT_USAGE
