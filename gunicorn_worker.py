"""gunicorn's threaded worker, with puma's "fast track" for kept-alive connections.

In gunicorn's gthread worker every request on a kept-alive connection travels main thread → pool thread → main
thread: the poller sees the socket readable, submits it to the pool, and after the response the pool thread hands
the socket back through a pipe so the poller can watch it again. Those hand-offs (about twenty futex calls, two
epoll changes and a pipe write and read per request, by strace) cost 0.05–0.08 ms a request on a 2-CPU box: a
bare WSGI app answers a kept-alive client in 0.46–0.47 ms under gthread, 0.38–0.42 ms under this worker, and a bare
Rack app under puma in 0.23–0.29 ms (BENCHMARKS.md, "kiqboard vs Sidekiq Web").

Puma avoids them for the common case: a thread that has just answered on a kept-alive connection waits a moment for
that connection's next request (a browser fetching assets, Heroku's router reusing its connection to the dyno, an
API script) and serves it at once. This worker does the same, within limits that keep the pool available to
everybody else:

- at most half of the threads wait like this at any moment (none when there is only one thread), so the other half
  never sits on an idle connection and takes new connections and those the poller hands over;
- a thread waits only while no submitted work is queued for the pool, and for at most ``fast_track_seconds``;
- one connection is served at most ``max_inline_requests`` times in a row before it goes back to the poller, so a
  busy client cannot keep a thread to itself;
- a stopping worker stops waiting at once (SIGTERM wakes every waiting thread), and HTTP/2 is left to gunicorn.
"""

from __future__ import annotations

import os
import select
import threading

from gunicorn.workers.gthread import ThreadWorker


class FastTrackThreadWorker(ThreadWorker):
    fast_track_seconds = 0.1
    max_inline_requests = 10

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._counts = threading.Lock()
        self._waiting = 0  # threads waiting on a kept-alive connection right now
        self._queued = 0  # connections submitted to the pool and not yet picked up by a thread
        self._stopping_r = self._stopping_w = -1  # becomes readable when the worker is told to stop

    def init_process(self) -> None:
        self._stopping_r, self._stopping_w = os.pipe()
        os.set_blocking(self._stopping_w, False)
        super().init_process()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        try:
            os.write(self._stopping_w, b"x")
        except OSError:
            pass  # already written (pipe full) or not yet created: nothing is waiting on it

    def enqueue_req(self, conn) -> None:
        with self._counts:
            self._queued += 1
        super().enqueue_req(conn)

    def handle(self, conn):
        with self._counts:
            self._queued -= 1
        for _ in range(self.max_inline_requests):
            keepalive = super().handle(conn)
            if keepalive is not True or getattr(conn, "is_http2", False) or not self.alive:
                return keepalive
            if conn.parser.unreader.buf.getvalue():
                continue  # the next request was already read along with this one
            if not self._wait_for_next_request(conn):
                return True  # idle: back to the poller, as gthread does
        return True

    def _wait_for_next_request(self, conn) -> bool:
        with self._counts:
            if self._queued > 0 or self._waiting >= self.cfg.threads // 2:
                return False
            self._waiting += 1
        try:
            poller = select.poll()
            poller.register(conn.sock, select.POLLIN)
            poller.register(self._stopping_r, select.POLLIN)
            events = poller.poll(self.fast_track_seconds * 1000)
            return self.alive and any(fd != self._stopping_r for fd, _ in events)
        except (OSError, ValueError):
            return False  # the socket went away; gunicorn's own path sorts it out
        finally:
            with self._counts:
                self._waiting -= 1
