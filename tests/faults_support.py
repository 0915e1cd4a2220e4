"""Helpers for the fault, load, fuzz and chaos suites (tests/test_faults.py, test_load.py, test_fuzz_pages.py,
test_chaos_actions.py) and their long versions in bench/ (load.py, chaos_actions.py).

- `hung(server)`: SIGSTOP a RedisServer's process, SIGCONT it on exit whatever happens.
- `session_cookie(secret_key, login, teams)`: a signed `kiqboard_session` cookie value for a signed-in user, for
  clients that talk to a real server over HTTP (gunicorn) instead of Flask's test client.
- `signed_in_client(app, login, teams)`: a Flask test client with that session.
- `Gunicorn`: the Procfile's command as a real process on 127.0.0.1, with worker RSS readings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SECRET_KEY = "kiqboard-faults-secret-key-0123456789abcdef"
GITHUB_ENV = {
    # Never contacted: sessions are minted here and the membership TTL outlasts every run.
    "GITHUB_CLIENT_ID": "client", "GITHUB_CLIENT_SECRET": "secret", "GITHUB_ORG": "acme",
    "GITHUB_URL": "http://127.0.0.1:9", "GITHUB_API_URL": "http://127.0.0.1:9",
    "SECRET_KEY": SECRET_KEY, "MEMBERSHIP_TTL": "86400",
}


@contextlib.contextmanager
def hung(server) -> Iterator[None]:
    """The redis-server of `server` (tests.conftest.RedisServer) stopped with SIGSTOP: it accepts TCP connections
    (the kernel does) but never answers. Always SIGCONT'd afterwards."""
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _user_session(login: str, teams: tuple[str, ...]) -> dict:
    from auth import USER_SESSION_KEY, User

    return {
        "_user_id": login,
        "_fresh": True,
        USER_SESSION_KEY: User(login=login, teams=teams, orgs=("acme",), membership_checked_at=time.time()).to_session(),
    }


def signed_in_client(app, login: str = "octocat", teams: tuple[str, ...] = ()):
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(_user_session(login, teams))
    return client


def session_cookie(secret_key: str = SECRET_KEY, login: str = "octocat", teams: tuple[str, ...] = ()) -> str:
    """The value of a `kiqboard_session` cookie Flask accepts from an app signed with `secret_key`."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("kiqboard-cookie")
    app.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    return serializer.dumps(_user_session(login, teams))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GITHUB_", "WEB_CONCURRENCY", "GUNICORN_"))}
    env.pop("SECRET_KEY", None)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.update(extra)
    return env


class Gunicorn:
    """`web:` of the Procfile (gunicorn 'app:create_app()' with gunicorn.conf.py), bound to loopback only."""

    def __init__(self, env: Mapping[str, str], port: int, workers: int = 2, threads: int = 8,
                 max_requests: int | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
        # Loopback only: gunicorn.conf.py binds 0.0.0.0:$PORT; a later --bind on the command line wins.
        self.command = f"{command} --bind 127.0.0.1:{port} --access-logfile /dev/null"
        if max_requests is not None:
            self.command += f" --max-requests {max_requests}"
        self.env = clean_env(**env, PORT=str(port), WEB_CONCURRENCY=str(workers), GUNICORN_THREADS=str(threads))
        self.log = tempfile.NamedTemporaryFile(prefix="kiqboard-gunicorn-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Gunicorn":
        self.process = subprocess.Popen(
            self.command, shell=True, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200 and len(self.worker_pids()) > 0:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{self.read_log()[-3000:]}")
            time.sleep(0.2)
        return self

    def read_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def master_pid(self) -> int | None:
        """The gunicorn master: the process itself when the shell exec'd it, else the shell's gunicorn child."""
        if self.process is None:
            return None
        pid = self.process.pid
        argv0 = (_cmdline(pid).split() or [""])[0]
        if not argv0.endswith("sh"):
            return pid
        return next((c for c in _children(pid) if "gunicorn" in _cmdline(c)), None)

    def worker_pids(self) -> list[int]:
        master = self.master_pid()
        return [pid for pid in _children(master) if "gunicorn" in _cmdline(pid)] if master else []

    def worker_rss_kb(self) -> dict[int, int]:
        out = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1])
            except OSError:
                continue
        return out

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> "Gunicorn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def add_paths() -> None:
    """For bench/ scripts: make the app modules and tests/ importable as tests do."""
    for path in (str(ROOT), str(ROOT / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
