"""The gunicorn worker of `token-service serve`: gunicorn's gthread worker, with every blocking
read and write on a client's socket bounded (issue 15, defect 6).

gunicorn's threads read a request's head, and the app its body, on a blocking socket with no
timeout once the first byte has arrived: a client that stalls mid-request holds the thread for
good. Here "blocking" means "blocking for at most TOKEN_SERVICE_READ_TIMEOUT seconds": the
stalled client's connection is closed when that passes, and the thread goes back to the pool.
The body gets a 408 answer on top (api/body.py). The worker's own loop, its poller and its
heartbeat are gunicorn's, unchanged.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from gunicorn.workers import gthread

log = logging.getLogger(__name__)

#: Seconds per read or write; the app reads the same variable (config.Settings.read_timeout).
READ_TIMEOUT = float(os.environ.get("TOKEN_SERVICE_READ_TIMEOUT") or 10)


class ClientSocket(socket.socket):
    """A client connection whose blocking mode is a timeout: gunicorn's threads switch sockets
    to blocking before they read or write, and the poller back to non-blocking."""

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(READ_TIMEOUT)
        else:
            super().setblocking(False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """A read that timed out is the end of the stream: gunicorn then closes the connection
        as for a client that left (the body's reader answers 408 first), without a traceback
        in the log for every stalled client."""
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            log.warning("client stalled for %s s: connection closed", self.gettimeout())
            return b""


class ThreadWorker(gthread.ThreadWorker):
    """gthread, accepting connections as ClientSocket (the rest of accept as gunicorn's)."""

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
            sock = ClientSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            self.nr_conns += 1
            sock.setblocking(True)
            conn = gthread.TConn(self.cfg, sock, client, listener.getsockname())
            self.enqueue_req(conn)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
