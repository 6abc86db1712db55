"""What reaches the terminal during a sweep: the progress display, the tables and errors; the
chatter goes to a log file.

The chatter comes from many places: Ray's startup, Tune's status box, and every Ray worker's
output (transformers' `Loading weights` bars and load reports, Ray Train's `Reported metrics`),
which Ray forwards to the driver's stdout and stderr (`log_to_driver`). Silencing each at its
source would miss the next one, so the driver's file descriptors 1 and 2 themselves are pointed
at the log file, which also catches what C++ code and child processes write; the console keeps
its own copies of the original descriptors. With `verbose`, a thread copies the chatter to the
terminal's stderr as well.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass
class Console:
    out: TextIO  # the terminal's stdout, whatever fd 1 points at now
    err: TextIO
    log_path: Path


def _tee(read_fd: int, log_fd: int, console_fd: int) -> None:
    while chunk := os.read(read_fd, 65536):
        os.write(log_fd, chunk)
        with contextlib.suppress(OSError):  # a closed terminal must not stop the log
            os.write(console_fd, chunk)


@contextlib.contextmanager
def chatter_to(log_path: Path, verbose: bool = False) -> Iterator[Console]:
    """Point this process's stdout and stderr (and its future children's) at `log_path` (appended
    to); yield streams that still reach the terminal. Restored on exit, even on an exception,
    so a traceback raised from inside reaches the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    err = os.fdopen(os.dup(2), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    tee = None
    if verbose:
        read_fd, target = os.pipe()
        tee = threading.Thread(target=_tee, args=(read_fd, log_fd, saved[1]), daemon=True)
        tee.start()
    else:
        target = log_fd
    os.dup2(target, 1)
    os.dup2(target, 2)
    # Python-level writers too, in case sys.stdout / sys.stderr were swapped for something that
    # does not write to fds 1 and 2 (a test's capture, an embedding application).
    streams = sys.stdout, sys.stderr
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False, errors="backslashreplace")
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False, errors="backslashreplace")
    try:
        yield Console(out, err, log_path)
    except BaseException:
        traceback.print_exc()  # into the log too; the terminal gets it once fd 2 is back
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        if tee is not None:
            os.close(target)
            # Ray's processes may hold the pipe open past this point: what is in it now is
            # copied, what they write later still is (the thread lives as long as the process).
            tee.join(timeout=2)
        else:
            os.close(log_fd)
        for fd in saved:
            os.close(fd)
        out.flush()
        err.flush()
