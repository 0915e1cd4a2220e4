"""What the web server alone costs per request: a bare app under puma, gunicorn's gthread and kiqboard's worker.

    .venv/bin/python bench/server_floor.py [--requests 3000]

A 2-byte "ok" app (Rack lambda for puma 5.6 -t 8:8; WSGI function for gunicorn -w 1 --threads 8), one keep-alive
http.client connection per server, requests alternating between the servers (order reversed every round, the
first 200 rounds are warm-up). Prints the median ms per request for:
  puma                    (the server under Sidekiq Web in bench/compare.py)
  gunicorn gthread        (gunicorn's own threaded worker)
  gunicorn fast track     (gunicorn_worker.FastTrackThreadWorker, as gunicorn.conf.py runs it)
  ... each gunicorn also with --worker-tmp-dir /dev/shm, as gunicorn.conf.py sets it.
Loopback only; every server is stopped on exit.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from compare import wait_http  # noqa: E402
from tests.conftest import free_port  # noqa: E402

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
RACK_APP = 'run lambda { |env| [200, {"Content-Type" => "text/plain", "Content-Length" => "2"}, ["ok"]] }\n'


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def start(argv: list[str], cwd: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per server")
    args = parser.parse_args()
    if shutil.which("puma") is None:
        sys.exit("bench/server_floor.py: puma is not installed (apt-get install puma)")

    work = tempfile.mkdtemp(prefix="kiqboard-floor-")
    (Path(work) / "hello.ru").write_text(RACK_APP)
    variants = [("puma", None)]
    for name, worker in (("gunicorn gthread", "gthread"),
                         ("gunicorn fast track", "gunicorn_worker.FastTrackThreadWorker")):
        variants += [(name, ["-k", worker]), (f"{name}, /dev/shm", ["-k", worker, "--worker-tmp-dir", "/dev/shm"])]
    servers = []
    try:
        for name, gunicorn_args in variants:
            port = free_port()
            if gunicorn_args is None:
                argv = ["puma", "-b", f"tcp://127.0.0.1:{port}", "-t", "8:8", "-w", "0", "-e", "production", "hello.ru"]
                process = start(argv, work)
            else:
                argv = [GUNICORN, "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "8", *gunicorn_args,
                        "server_floor:hello"]
                process = start(argv, str(ROOT / "bench"))
            servers.append((name, port, process))
        for _, port, process in servers:
            wait_http(f"http://127.0.0.1:{port}/", process)

        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _, port, _ in servers]
        times: list[list[float]] = [[] for _ in servers]
        warm = 200
        for round_ in range(warm + args.requests):
            order = range(len(servers)) if round_ % 2 else reversed(range(len(servers)))
            for i in order:
                started = time.perf_counter()
                connections[i].request("GET", "/")
                body = connections[i].getresponse().read()
                elapsed = time.perf_counter() - started
                if body != b"ok":
                    raise RuntimeError(f"{servers[i][0]} answered {body!r}")
                if round_ >= warm:
                    times[i].append(elapsed)
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load {load}, "
              f"{args.requests} alternating requests per server\n")
        print("| server | median ms per request |\n|---|---:|")
        for (name, _, _), samples in zip(servers, times):
            print(f"| {name} | {statistics.median(samples) * 1000:.3f} |")
    finally:
        for _, _, process in servers:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
