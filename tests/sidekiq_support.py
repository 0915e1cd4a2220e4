"""Run REAL Sidekiq (Debian's ruby-sidekiq 6.4.1) against a real redis-server from the tests.

- `require_ruby()`: skip locally when Ruby/Sidekiq/ActiveJob/redis-namespace are missing, FAIL when env CI is set
  (the `require_binary` pattern of conftest.py; .ci/run installs the packages).
- `run_ruby(script, env)`, `seed(...)`, `dump(...)`: the scripts in tests/ruby/ (worker_app.rb, seed.rb, dump.rb).
- `SidekiqProcess`: a context manager around the `sidekiq` CLI that waits until the process is in `processes`,
  and stops it at the end (TERM, then KILL on timeout).

Mark tests that use this with `@pytest.mark.ruby`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from conftest import IN_CI, ROOT, require_binary

RUBY_DIR = ROOT / "tests" / "ruby"
WORKER_APP = RUBY_DIR / "worker_app.rb"
SEED = RUBY_DIR / "seed.rb"
DUMP = RUBY_DIR / "dump.rb"

# Keys written by tests/ruby/worker_app.rb (namespaced like every Sidekiq key when a namespace is set).
EXECUTED = "kiqboard-test:executed"   # LIST of jids of jobs that ran to completion
ARGS = "kiqboard-test:args"           # HASH jid -> JSON of the args the job received
STARTED = "kiqboard-test:started"     # LIST of jids of SleepWorker jobs that started
PAYLOADS = "kiqboard-test:payloads"   # HASH jid -> the job hash as Sidekiq's processor parsed it (middleware)

RUBY_LIBS = ("sidekiq", "sidekiq/api", "active_job", "redis/namespace", "globalid")
T = TypeVar("T")


class RubyError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- availability


@functools.lru_cache(maxsize=1)
def _missing_ruby_libs() -> str | None:
    ruby = shutil.which("ruby")
    if ruby is None:
        return "ruby"
    code = "; ".join(f'require "{lib}"' for lib in RUBY_LIBS)
    result = subprocess.run([ruby, "-e", code], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return f"a Ruby library ({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'})"
    return None


def ruby_available() -> bool:
    """True when ruby, the sidekiq CLI and the Ruby libraries the worker app needs are all installed."""
    return shutil.which("ruby") is not None and shutil.which("sidekiq") is not None and _missing_ruby_libs() is None


def require_ruby() -> None:
    """Skip (locally) or fail (CI) unless real Sidekiq can be run."""
    require_binary("ruby", "Debian package ruby, pulled in by ruby-sidekiq")
    require_binary("sidekiq", "Debian package ruby-sidekiq")
    missing = _missing_ruby_libs()
    if missing:
        message = f"{missing} is not installed (Debian ruby-sidekiq ruby-activejob ruby-redis-namespace); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# --------------------------------------------------------------------------------------------- scripts


def ruby_env(redis_url: str, namespace: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUNDLE_", "RUBYOPT", "GEM_"))}
    env["REDIS_URL"] = redis_url
    env["NAMESPACE"] = namespace or ""
    env.setdefault("TZ", "UTC")
    env.update(extra or {})
    return env


def run_ruby(
    script: str | Path,
    env: Mapping[str, str],
    args: Iterable[str] = (),
    timeout: float = 120,
) -> str:
    """Run a Ruby script (a path, or a file name inside tests/ruby/) and return its stdout; RubyError on failure."""
    path = Path(script)
    if not path.is_absolute():
        path = RUBY_DIR / path
    result = subprocess.run(
        [shutil.which("ruby") or "ruby", str(path), *args],
        env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=RUBY_DIR,
    )
    if result.returncode != 0:
        raise RubyError(f"{path.name} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result.stdout


def _last_json_line(stdout: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RubyError("no output")
    return json.loads(lines[-1])


def seed(redis_url: str, namespace: str | None = None, mode: str = "full") -> dict:
    """tests/ruby/seed.rb: returns {"jids": {category: [jid...]}, "action_mailer": bool}."""
    return _last_json_line(run_ruby(SEED, ruby_env(redis_url, namespace), [mode]))


def dump(redis_url: str, namespace: str | None = None) -> dict:
    """tests/ruby/dump.rb: what Sidekiq's own API says (see the keys printed there)."""
    return _last_json_line(run_ruby(DUMP, ruby_env(redis_url, namespace)))


# --------------------------------------------------------------------------------------------- redis helpers


def nskey(namespace: str | None, key: str) -> str:
    return f"{namespace}:{key}" if namespace else key


def executed_jids(client: redis.Redis, namespace: str | None = None) -> list[str]:
    """Jids recorded by worker_app.rb's jobs, oldest first (with duplicates, if any ran twice)."""
    return [_s(j) for j in reversed(client.lrange(nskey(namespace, EXECUTED), 0, -1))]


def executed_args(client: redis.Redis, namespace: str | None = None) -> dict[str, Any]:
    return {_s(k): json.loads(v) for k, v in client.hgetall(nskey(namespace, ARGS)).items()}


def queue_jids(client: redis.Redis, queue: str, namespace: str | None = None) -> list[str]:
    out = []
    for member in client.lrange(nskey(namespace, f"queue:{queue}"), 0, -1):
        try:
            out.append(json.loads(member)["jid"])
        except (ValueError, KeyError, TypeError):
            out.append(None)
    return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll until predicate() is truthy and return it; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------- sidekiq process


class SidekiqProcess:
    """A real `sidekiq` process (the CLI from ruby-sidekiq) running tests/ruby/worker_app.rb.

        with SidekiqProcess(url, namespace="ns", queues=["default"], concurrency=2) as sk:
            sk.identity          # its entry in `processes` (hostname:pid:hex)
            sk.hash()            # its heartbeat hash (info, busy, beat, quiet, ...)
            sk.log()             # what it logged so far

    `poll_interval`: the scheduler's average poll (worker_app.rb sets Sidekiq.options[:poll_interval_average]).
    `heartbeat`: replaces Sidekiq's 5 s BEAT_PAUSE (signals are popped once per heartbeat); None keeps Sidekiq's.
    """

    def __init__(
        self,
        redis_url: str,
        namespace: str | None = None,
        queues: Iterable[str] = ("default",),
        concurrency: int = 2,
        tag: str = "kiqboard-test",
        shutdown_timeout: int = 2,
        poll_interval: float = 1.0,
        heartbeat: float | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 30,
    ) -> None:
        require_ruby()
        self.redis_url = redis_url
        self.namespace = namespace or None
        self.queues = list(queues)
        self.concurrency = concurrency
        self.tag = tag
        self.shutdown_timeout = shutdown_timeout
        self.start_timeout = start_timeout
        extra = {"KIQ_POLL": str(poll_interval), "KIQ_BEAT": "" if heartbeat is None else str(heartbeat)}
        self.env = ruby_env(redis_url, namespace, {**extra, **(env or {})})
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.process: subprocess.Popen | None = None
        self.identity: str | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="kiqboard-sidekiq-", suffix=".log", delete=False)

    # --- lifecycle

    def start(self) -> "SidekiqProcess":
        command = [
            shutil.which("sidekiq") or "sidekiq", "-r", str(WORKER_APP), "-e", "test",
            "-c", str(self.concurrency), "-t", str(self.shutdown_timeout), "-g", self.tag,
        ]
        for queue in self.queues:
            command += ["-q", queue]
        self.process = subprocess.Popen(
            command, env=self.env, cwd=RUBY_DIR, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            self.identity = wait_until(self._find_identity, self.start_timeout, "sidekiq to appear in `processes`", 0.05)
        except AssertionError:
            self.stop()
            raise AssertionError(f"sidekiq did not register in `processes`; its log:\n{self.log()[-4000:]}")
        return self

    def _find_identity(self) -> str | None:
        if self.process is None or self.process.poll() is not None:
            raise RubyError(f"sidekiq exited ({self.process and self.process.returncode}):\n{self.log()[-4000:]}")
        for identity in self.client.smembers(self.key("processes")):
            info = self.client.hget(self.key(identity), "info")
            if info and json.loads(info).get("pid") == self.process.pid:
                return identity
        return None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float | None = None) -> None:
        """TERM (Sidekiq drains for -t seconds), then KILL when it does not exit in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout if timeout is not None else self.shutdown_timeout + 8)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()

    def __enter__(self) -> "SidekiqProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what it reports

    def key(self, key: str) -> str:
        return nskey(self.namespace, key)

    def hash(self) -> dict[str, str]:
        assert self.identity
        return self.client.hgetall(self.key(self.identity))

    def busy(self) -> int:
        return int(self.hash().get("busy") or 0)

    def wait_busy(self, count: int, timeout: float = 15) -> None:
        """Until a heartbeat (every 5 s unless `heartbeat` was given) reports `busy` == count."""
        wait_until(lambda: self.busy() == count, timeout, f"{self.identity} to report busy={count}", 0.1)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def log_errors(self) -> list[str]:
        """Log lines about failed jobs or unparsable payloads (JSON errors, exceptions)."""
        bad = ("ParserError", "JSON", "unexpected token", "WARN: ", "ERROR: ")
        return [line for line in self.log().splitlines() if any(b in line for b in bad)]


def push_jobs(client: redis.Redis, queue: str, payloads: Iterable[dict], namespace: str | None = None) -> None:
    """Push raw payloads the way Sidekiq::Client does (SADD queues, LPUSH queue:Q)."""
    payloads = [json.dumps(p) for p in payloads]
    pipe = client.pipeline(transaction=False)
    pipe.sadd(nskey(namespace, "queues"), queue)
    for chunk in range(0, len(payloads), 1000):
        pipe.lpush(nskey(namespace, f"queue:{queue}"), *payloads[chunk:chunk + 1000])
    pipe.execute()
