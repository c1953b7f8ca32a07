"""Writing to a reader that may leave: `nvreload --status --json | head -c 100`, a monitoring agent
that times out and closes its pipe, an ssh session whose terminal went away. The exit code says what
happened on the node, never whether someone was still reading; and a reload must never stop
halfway because its progress could not be printed."""

from __future__ import annotations

import errno
import os
import sys

# (select and contextlib are not imported: each is a share of a --status run's start-up that only a
# reader leaving needs, or that a small class does as well)

# EPIPE: a pipe with no reader; EIO: a terminal that hung up
READER_GONE = (errno.EPIPE, errno.EIO)


def _hung_up(fd: int) -> bool:
    """The write end of `fd` has no reader any more (poll reports an error or a hang-up)."""
    import select

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


class _ReaderMayLeave:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _trace: object) -> bool:
        if error is None:
            try:
                for stream in (sys.stdout, sys.stderr):
                    if stream is not None:
                        stream.flush()
            except OSError as exc:
                error = exc
        if not isinstance(error, OSError):
            return False  # no error, or one that is not about output: it goes on
        if error.errno not in READER_GONE:
            if kind is None:
                raise error  # the flush's own error
            return False
        detach_gone_streams()
        return True


def reader_may_leave() -> _ReaderMayLeave:
    """Output written inside stops quietly when its reader has gone; other errors pass."""
    return _ReaderMayLeave()
