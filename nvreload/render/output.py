"""Writing to a reader that may leave: `nvreload --status --json | head -c 100`, a monitoring agent
that times out and closes its pipe, an ssh session whose terminal went away. The exit code says what
happened on the node, never whether someone was still reading; and a reload must never stop
halfway because its progress could not be printed."""

from __future__ import annotations

import errno
import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# EPIPE: a pipe with no reader; EIO: a terminal that hung up
READER_GONE = (errno.EPIPE, errno.EIO)


def _hung_up(fd: int) -> bool:
    """The write end of `fd` has no reader any more (poll reports an error or a hang-up)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def detach_gone_streams() -> None:
    """Point stdout/stderr whose reader left at /dev/null, so that the rest of the output (and
    Python's flush at exit) goes nowhere instead of raising. When it cannot tell which one left,
    both go."""
    streams = [s for s in (sys.stdout, sys.stderr) if s is not None]
    try:
        gone = [s for s in streams if _hung_up(s.fileno())] or streams
    except (OSError, ValueError, AttributeError):
        gone = streams
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in gone:
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass
    finally:
        os.close(devnull)


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """Output written inside stops quietly when its reader has gone; other errors pass."""
    try:
        yield
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except OSError as exc:
        if exc.errno not in READER_GONE:
            raise
        detach_gone_streams()
