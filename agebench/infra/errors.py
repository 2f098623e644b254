"""The one base class of the errors a user can cause and fix, and the one place that turns them into a line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """An error the user caused and can fix (bad path, bad checksum, unknown name, bad params).

    Its message is one line naming the thing and the fix; the `agebench` command and every stage print
    it as `error: ...` and exit with status 2, without a traceback. Subclasses also derive from the
    builtin class that describes them (ValueError, OSError, KeyError...) so callers may catch either.
    """


def user_errors() -> tuple[type[BaseException], ...]:
    """What is reported as one line (exit 2): every UserError, and the two user-caused kinds that cannot
    derive from it: OSError (a missing path, an output that cannot be written) and
    `metrics.backbones.BackboneError` (scoring weights not installed; `metrics/` never imports `agebench`).
    """
    from metrics.backbones import BackboneError

    return (UserError, OSError, BackboneError)


def report_user_error(prog: str, exc: BaseException) -> int:
    """Print `<prog>: error: <exc>` on stderr (one line) and return the exit status 2."""
    print(f"{prog}: error: {exc}" if prog else f"error: {exc}", file=sys.stderr)
    return 2


def call_reporting_user_errors(prog: str, run: Callable[[], int | None]) -> int:
    """`run()`'s status (0 for None); 2 after one line when it raises a user error (see `user_errors`)."""
    try:
        return run() or 0
    except user_errors() as exc:
        return report_user_error(prog, exc)
