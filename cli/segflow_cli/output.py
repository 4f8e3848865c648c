"""What the commands print: JSON documents, a function's answer, and one line (plus JSON) for a refusal.

With `--json`, every way a command ends prints exactly one JSON document on stdout (the result, or
`{"command", "error": {"code", "message"}, "exit_status"}`), so a script can always parse it; the
human-readable line of a refusal goes to stderr either way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as a shell reports it."""
USAGE = 2
"""Exit status of a usage or configuration error (nothing was done)."""


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str), flush=True)


def print_body(result: Any) -> None:
    """What FC would send back as the response body: a str or bytes as is (pretty when it is JSON),
    anything else as JSON."""
    if isinstance(result, (bytes, bytearray)):
        result = bytes(result).decode("utf-8", "replace")
    if isinstance(result, str):
        try:
            print_json(json.loads(result))
        except ValueError:
            print(result)
        return
    print_json(result)


def error_document(command: str, message: str, *, code: str, exit_status: int) -> dict[str, Any]:
    return {
        "command": command,
        "error": {"code": code, "message": message},
        "exit_status": exit_status,
    }


def refuse(
    prog: str, message: str, *, as_json: bool, code: str = "UsageError", exit_status: int = USAGE
) -> int:
    """`prog: message` on stderr (and the error document on stdout with `--json`); returns the status."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    if as_json:
        print_json(error_document(prog.split()[-1], message, code=code, exit_status=exit_status))
    return exit_status


def run_guarded(prog: str, as_json: bool, work: Callable[[], int], *, interrupted: str, refused: str) -> int:
    """Run a command's work; a `SegflowError` or `ValueError` it raises is a refusal (exit 2, `refused`
    appended), Ctrl-C exits 130 saying `interrupted`."""
    from segflow.errors import SegflowError

    try:
        return work()
    except KeyboardInterrupt:
        return refuse(prog, interrupted, as_json=as_json, code="Interrupted", exit_status=INTERRUPTED)
    except SegflowError as error:
        return refuse(prog, f"{error.message} ({error.code}){refused}", as_json=as_json, code=error.code)
    except ValueError as error:
        return refuse(prog, str(error), as_json=as_json)
