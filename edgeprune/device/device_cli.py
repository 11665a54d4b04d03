"""The command-line skeleton every script run on a device shares: exit codes, checked numbers, one-line errors.

Used by the bundle's validate_*.py (through validation_common) and by deploy/integrations; numpy-free,
so a device needs nothing to import it. A problem the operator can fix is one `error: ...` line on
stderr and an exit code a service manager can act on, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_TAMPERED = 0, 1, 2, 3  # 1: over budget / source gone, per script


class Exit(Exception):
    """A condition the operator must fix: reported as one line on stderr, with this exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def cli(main, errors: tuple = ()):
    """Wrap `main(argv) -> int`: Exit, and each (exception types, code) in `errors`, become one line and a code."""
    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except Exit as exc:
            return fail(str(exc), exc.code)
        except Exception as exc:
            code = next((code for kinds, code in errors if isinstance(exc, kinds)), None)
            if code is None:
                raise
            return fail(str(exc), code)
    return wrapped


def number(kind, test, rule: str):
    """An argparse type: `kind(text)` that must pass `test`, else "must be <rule>"."""
    def parse(text: str):
        value = kind(text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, ">= 1")
non_negative_int = number(int, lambda v: v >= 0, ">= 0")
positive_float = number(float, lambda v: v > 0, "> 0")
non_negative_float = number(float, lambda v: v >= 0, ">= 0")
unit_float = number(float, lambda v: 0 <= v <= 1, "in [0, 1]")
percentile = number(float, lambda v: 0 < v <= 100, "in (0, 100]")


def cli_with(errors: tuple):
    """`@cli_with(errors=...)`: `cli` as a decorator that also maps these exception types to exit codes."""
    return lambda main: cli(main, errors)
