"""Start-up failures: one line on stderr and in the Kubernetes termination log, then exit 1."""

import contextlib
import sys
from pathlib import Path
from typing import NoReturn


class StartupError(Exception):
    """The server cannot start; the message is the one-line reason shown to the user."""


def exit_with_reason(reason: str, termination_log: Path) -> NoReturn:
    one_line = " ".join(reason.split())
    # Kubernetes shows this file's content in `kubectl describe pod` (terminationMessagePath).
    if termination_log.exists():
        with contextlib.suppress(OSError):  # stderr still carries the reason
            termination_log.write_text(one_line + "\n", encoding="utf-8")
    sys.stderr.write(f"modelserver: {one_line}\n")
    sys.exit(1)
