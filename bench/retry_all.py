"""Retry All: kiqboard's SidekiqActions.retry_all vs Sidekiq 6.4.1's own Sidekiq::RetrySet.new.retry_all.

Starts its own redis-server on a free port, seeds the same kind of retry entries for both sides (Sidekiq 6 payloads
as Ruby's JSON writes them: retry, queue, class, args, jid, created_at, enqueued_at, error fields, retry_count),
times each side, checks that every job landed in its queue exactly once, and prints jobs/s and the ratio.

    .venv/bin/python bench/retry_all.py                    # 100,000 entries for kiqboard, 10,000 for Ruby
    .venv/bin/python bench/retry_all.py --backtrace        # payloads also carry a compressed error_backtrace
    .venv/bin/python bench/retry_all.py --write            # also rewrite the section in BENCHMARKS.md

Ruby runs `ruby -e` with `require "sidekiq/api"` (Debian's ruby-sidekiq). It does ~2,000 jobs/s here, so by default
it gets a 10,000-entry subset (its rate does not depend on the set's size: one remove_job + push per entry).
Each side is run --repeat times on freshly seeded data; the best run counts (the machine may be shared).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidekiq_actions import SidekiqActions  # noqa: E402

SECTION = "Retry All vs Sidekiq"

RUBY = r"""
$stderr.reopen(File::NULL)  # redis-rb 4.6 warns on every SADD
require "sidekiq/api"
Sidekiq.configure_client { |config| config.redis = { url: ENV.fetch("REDIS_URL") } }
set = Sidekiq::RetrySet.new
size = set.size
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
set.retry_all
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
puts({ "size" => size, "seconds" => elapsed }.to_json)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="kiqboard-bench-")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """utime + stime of the redis-server process (less sensitive to a busy machine than wall time)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def backtrace_blob() -> str:
    lines = [f"/app/app/workers/hard_worker.rb:{n}:in `perform'" for n in range(40)]
    return base64.encodebytes(zlib.compress(json.dumps(lines).encode())).decode()


def seed(client: redis.Redis, count: int, with_backtrace: bool) -> None:
    client.flushall()
    now = time.time()
    blob = backtrace_blob() if with_backtrace else None
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        job = {
            "retry": True, "queue": "default", "class": "HardWorker", "args": [index, "user@example.com", {"x": 1}],
            "jid": f"{index:024x}", "created_at": now - 3600, "enqueued_at": now - 3500,
            "error_message": "undefined method `name' for nil:NilClass", "error_class": "NoMethodError",
            "failed_at": now - 3400, "retry_count": 3, "retried_at": now - 60,
        }
        if blob:
            job["error_backtrace"] = blob
        pipe.zadd("retry", {json.dumps(job, separators=(",", ":")): now - 1 + index * 1e-5})
        if index % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def check(client: redis.Redis, count: int) -> None:
    assert client.zcard("retry") == 0, "entries left in retry"
    jids = [json.loads(raw)["jid"] for raw in client.lrange("queue:default", 0, -1)]
    assert len(jids) == count and len(set(jids)) == count, "not every job queued exactly once"


def run_python(server: Server, count: int, with_backtrace: bool, batch_size: int | None) -> dict:
    client = redis.Redis.from_url(server.url)
    seed(client, count, with_backtrace)
    kwargs = {"batch_size": batch_size} if batch_size else {}
    actions = SidekiqActions(client, **kwargs)
    cpu = server.cpu_seconds()
    started = time.perf_counter()
    moved = actions.retry_all("retry")
    seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    assert moved == count, (moved, count)
    check(client, count)
    return {"count": count, "seconds": seconds, "redis_cpu": cpu}


def run_ruby(server: Server, count: int, with_backtrace: bool) -> dict:
    client = redis.Redis.from_url(server.url)
    seed(client, count, with_backtrace)
    cpu = server.cpu_seconds()
    result = subprocess.run(["ruby", "-e", RUBY], env={**os.environ, "REDIS_URL": server.url},
                            capture_output=True, text=True, check=True)
    cpu = server.cpu_seconds() - cpu
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["size"] == count, data
    check(client, count)
    return {"count": count, "seconds": data["seconds"], "redis_cpu": cpu}


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["seconds"] / run["count"])


def _runs(runs: list[dict]) -> str:
    return ", ".join(f"{run['seconds']:.2f}s" for run in runs)


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = f"## {SECTION}\n\n{text.strip()}\n\n"
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip("\n") + "\n\n" + block
    path.write_text(current.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="entries for kiqboard (default 100000)")
    parser.add_argument("--ruby-count", type=int, default=10_000, help="entries for Sidekiq's Ruby (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side, best counts (default 3)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--backtrace", action="store_true", help="payloads carry a compressed error_backtrace")
    parser.add_argument("--no-ruby", action="store_true")
    parser.add_argument("--write", action="store_true", help=f"rewrite '## {SECTION}' in BENCHMARKS.md")
    args = parser.parse_args()

    load_before = os.getloadavg()
    server = Server()
    try:
        py_runs = [run_python(server, args.count, args.backtrace, args.batch_size) for _ in range(args.repeat)]
        rb_runs = [] if args.no_ruby or not shutil.which("ruby") else [
            run_ruby(server, args.ruby_count, args.backtrace) for _ in range(args.repeat)
        ]
    finally:
        server.close()

    py = best(py_runs)
    py_rate = py["count"] / py["seconds"]
    print(f"kiqboard retry_all: {py['count']:,} jobs in {py['seconds']:.3f} s = {py_rate:,.0f} jobs/s "
          f"(redis-server CPU {py['redis_cpu']:.2f} s; runs: {_runs(py_runs)})")
    if not rb_runs:
        return
    rb = best(rb_runs)
    rb_rate = rb["count"] / rb["seconds"]
    ratio = py_rate / rb_rate
    print(f"Sidekiq 6.4.1 RetrySet#retry_all: {rb['count']:,} jobs in {rb['seconds']:.3f} s = {rb_rate:,.0f} jobs/s "
          f"(runs: {_runs(rb_runs)})")
    print(f"ratio: {ratio:.1f}x")
    if args.write:
        payload = "with a compressed `error_backtrace`" if args.backtrace else "without `error_backtrace` (Sidekiq's default)"
        client_note = f"batch_size={args.batch_size}" if args.batch_size else "default batch_size"
        write_section(f"""
Reproduce: `.venv/bin/python bench/retry_all.py{' --backtrace' if args.backtrace else ''} --write`
(starts its own redis-server; Ruby is Debian's ruby-sidekiq 6.4.1 via `ruby -e 'require "sidekiq/api"' …`).

Data: Sidekiq 6 retry entries {payload}, all in queue `default`, seeded fresh before every run; best of {args.repeat}
runs per side; every run checks that each jid ended up in `queue:default` exactly once and `retry` is empty.

| | entries | seconds | jobs/s |
| --- | ---: | ---: | ---: |
| kiqboard `SidekiqActions.retry_all("retry")` ({client_note}) | {py['count']:,} | {py['seconds']:.3f} | {py_rate:,.0f} |
| Sidekiq 6.4.1 `Sidekiq::RetrySet.new.retry_all` | {rb['count']:,} | {rb['seconds']:.3f} | {rb_rate:,.0f} |

**Ratio: {ratio:.0f}×** (goal ≥ 50×). Measured {time.strftime('%Y-%m-%d %H:%M')} on this machine ({os.cpu_count()} CPUs,
shared with other work, so absolute numbers vary from run to run; load average {load_before[0]:.2f} before,
{os.getloadavg()[0]:.2f} after). kiqboard runs: {_runs(py_runs)}; redis-server CPU for the best: {py['redis_cpu']:.2f} s.
Sidekiq runs: {_runs(rb_runs)}.
""")


if __name__ == "__main__":
    main()
