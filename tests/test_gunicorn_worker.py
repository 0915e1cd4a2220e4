"""gunicorn_worker.FastTrackThreadWorker under the Procfile's real gunicorn, over real sockets on loopback.

What it must never do is hold the pool hostage: idle kept-alive connections may occupy at most half the threads,
and a stopping worker must not sit out its waits. The timings of the fast track itself are bench/compare.py's.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import textwrap
import time

import pytest

from tests.conftest import free_port
from tests.faults_support import GITHUB_ENV, Gunicorn

LONG_WINDOW = 30  # seconds an idle kept-alive connection may hold a thread in the tests below


@pytest.fixture
def env(redis_server) -> dict[str, str]:
    return {"REDIS_1": redis_server.url, "LOG_LEVEL": "ERROR", **GITHUB_ENV}


@pytest.fixture
def long_window(tmp_path) -> tuple[str, dict[str, str]]:
    """A worker class whose threads would wait LONG_WINDOW s for the next request: a refusal to wait shows."""
    (tmp_path / "long_window_worker.py").write_text(textwrap.dedent(f"""
        from gunicorn_worker import FastTrackThreadWorker

        class LongWindowWorker(FastTrackThreadWorker):
            fast_track_seconds = {LONG_WINDOW}
    """))
    return "-k long_window_worker.LongWindowWorker", {"PYTHONPATH": str(tmp_path)}


def serve(env, threads: int = 8, extra_args: str = "", **more_env) -> Gunicorn:
    """Not started yet: `with serve(...) as server` starts it and stops it."""
    return Gunicorn({**env, **more_env}, free_port(), workers=1, threads=threads, extra_args=extra_args)


def get(connection: http.client.HTTPConnection, path: str = "/healthz") -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


def keep_alive(server: Gunicorn, timeout: float = 10) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def test_the_procfile_runs_the_fast_track_worker(env):
    with serve(env) as server:
        assert get(keep_alive(server))[0] == 200
        assert "Using worker: gunicorn_worker.FastTrackThreadWorker" in server.read_log()


def test_one_connection_serves_many_requests_in_turn(env):
    with serve(env) as server:
        connection = keep_alive(server)
        get(connection)
        local_port = connection.sock.getsockname()[1]
        # more than max_inline_requests, so the connection also goes back to the poller and comes out again
        for path in ["/healthz", "/login", "/static/app.css", "/sidekiq/stats", "/healthz"] * 7:
            status, _ = get(connection, path)
            assert status in (200, 401), (path, status)
        assert connection.sock is not None and connection.sock.getsockname()[1] == local_port  # never reconnected
        assert "Traceback" not in server.read_log()


def test_pipelined_requests_are_answered_in_order(env):
    with serve(env) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"".join(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                              for path in ("/healthz", "/login", "/healthz")))
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 ") < 3 and time.monotonic() < deadline:
            received += sock.recv(65536)
        starts = [m for m in re.finditer(rb"HTTP/1\.1 (\d{3}) ", received)]
        assert [m.group(1) for m in starts] == [b"200", b"200", b"200"]
        second = received[starts[1].start():starts[2].start()]
        assert b"Sign in" in second and b'"status":"ok"' in received[:starts[1].start()]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_idle_kept_alive_connections_never_hold_every_thread(env, long_window, threads):
    args, extra_env = long_window
    with serve(env, threads=threads, extra_args=args, **extra_env) as server:
        idle = [keep_alive(server) for _ in range(threads + 1)]  # more idle connections than there are threads
        for connection in idle:
            assert get(connection)[0] == 200
        # Each would keep its thread for LONG_WINDOW s if allowed to: a newcomer is still answered now.
        newcomer = keep_alive(server, timeout=LONG_WINDOW / 3)
        for _ in range(3):
            assert get(newcomer)[0] == 200
        for connection in idle:  # and every idle connection is still served when it speaks again
            assert get(connection)[0] == 200


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_stopping_worker_does_not_sit_out_its_waits(env, long_window):
    args, extra_env = long_window
    server = serve(env, threads=4, extra_args=args, **extra_env).start()
    try:
        waiting = keep_alive(server)
        assert get(waiting)[0] == 200  # its thread now waits up to LONG_WINDOW s for the next request
        gunicorns = [server.master_pid(), *server.worker_pids()]
        assert len(gunicorns) == 2 and None not in gunicorns
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)  # as Heroku stops a dyno: every process gets SIGTERM
        while any(alive(pid) for pid in gunicorns) and time.monotonic() - started < LONG_WINDOW / 2:
            time.sleep(0.1)
        # gunicorn.conf.py's graceful_timeout is 20 s: a worker that sat out its wait would take that long
        assert not any(alive(pid) for pid in gunicorns)
        assert "Traceback" not in server.read_log()
    finally:
        server.stop()
