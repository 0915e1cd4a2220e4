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
                 max_requests: int | None = None, extra_args: str = "") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
        # Loopback only: gunicorn.conf.py binds 0.0.0.0:$PORT; a later --bind on the command line wins.
        self.command = f"{command} --bind 127.0.0.1:{port} --access-logfile /dev/null"
        if max_requests is not None:
            self.command += f" --max-requests {max_requests}"
        if extra_args:
            self.command += f" {extra_args}"
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


def sidekiq_job(jid: str, klass: str = "HardWorker", queue: str = "default", now: float | None = None,
                **extra) -> dict:
    now = time.time() if now is None else now
    return {"class": klass, "args": [1, "two", {"three": 3}], "retry": True, "queue": queue, "jid": jid,
            "created_at": now - 60, "enqueued_at": now - 30, **extra}


def seed_pool(client, jobs: int = 200, now: float | None = None) -> dict:
    """A Sidekiq-shaped keyspace on a real Redis: 3 queues, retries, scheduled, dead, 2 processes with running jobs,
    30 days of history. Returns {"retry_key": "SCORE-JID" of one retry entry, "queues": [...]}."""
    import json

    from sidekiq_reader import entry_key

    now = float(int(time.time())) if now is None else now
    pipe = client.pipeline(transaction=False)
    queues = ["default", "critical", "low"]
    pipe.sadd("queues", *queues)
    for i in range(jobs):
        queue = queues[i % 3]
        pipe.lpush(f"queue:{queue}", json.dumps(sidekiq_job(f"q{i:022x}", queue=queue, now=now)))
    retry_key = None
    for i in range(jobs // 2):
        score = now + 60 + i
        job = sidekiq_job(f"r{i:022x}", now=now, error_class="RuntimeError", error_message=f"boom {i}", retry_count=i % 5,
                          failed_at=now - 100)
        pipe.zadd("retry", {json.dumps(job): score})
        retry_key = retry_key or entry_key(score, job["jid"])
        pipe.zadd("schedule", {json.dumps(sidekiq_job(f"s{i:022x}", now=now)): now + 3600 + i})
        pipe.zadd("dead", {json.dumps(sidekiq_job(f"d{i:022x}", now=now, error_class="E", error_message="dead")): now - i})
    for p in range(2):
        identity = f"host{p}:{1000 + p}:abcdef{p}"
        pipe.sadd("processes", identity)
        info = {"hostname": f"host{p}", "started_at": now - 3600, "pid": 1000 + p, "tag": "shop",
                "concurrency": 10, "queues": queues, "labels": ["web"], "identity": identity, "version": "7.2.4"}
        pipe.hset(identity, mapping={"info": json.dumps(info), "busy": 2, "beat": now, "quiet": "false",
                                     "rss": 123456, "rtt_us": 250})
        pipe.expire(identity, 3600)
        for t in range(2):
            work = {"queue": "default", "run_at": int(now - 5),
                    "payload": json.dumps(sidekiq_job(f"w{p}{t:021x}", now=now))}
            pipe.hset(f"{identity}:work", f"tid{t}", json.dumps(work))
    import datetime as dt

    today = dt.datetime.now(dt.timezone.utc).date()
    for d in range(30):
        day = (today - dt.timedelta(days=d)).isoformat()
        pipe.set(f"stat:processed:{day}", 1000 + d)
        pipe.set(f"stat:failed:{day}", d)
    pipe.set("stat:processed", 123456)
    pipe.set("stat:failed", 789)
    pipe.execute()
    return {"retry_key": retry_key, "queues": queues}


def pool_paths(pool: str, retry_key: str | None = None) -> list[str]:
    """Every read-only page of one pool."""
    paths = ["/", "/busy", "/queues", "/queues/default", "/queues/critical?page=2", "/retries", "/scheduled",
             "/morgue", "/retries?substr=boom", "/stats", "/stats/queues", "/?days=7"]
    if retry_key:
        paths.append(f"/retries/{retry_key}")
    return [f"/{pool}{p}" for p in paths]
