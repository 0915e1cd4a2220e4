"""Overview latency with 1, 5 and 10 pools, each behind a 2 ms round-trip TCP proxy to its own real redis-server.

    .venv/bin/python bench/overview.py [--requests 60] [--delay 0.001]

For each pool count: the median (and p90) of GET /api/pools and GET / through the Flask test client, signed in,
after warm-up; plus, for comparison, reading the same pools one after another (what a sequential overview would
cost). Goal: the 10-pool median at most 1.5x the 1-pool median. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

POOL_COUNTS = (1, 5, 10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int, directory: str) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on {port}")
            time.sleep(0.05)


def seed(client: redis.Redis, n: int) -> None:
    """A modest, realistic keyspace: 6 queues, 3 processes with running jobs, some retries/scheduled/dead, history."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.flushall()
    pipe.set("stat:processed", 1_000_000 + n)
    pipe.set("stat:failed", 1000 + n)
    today = time.gmtime(now)
    for offset in range(7):
        day = time.strftime("%Y-%m-%d", time.gmtime(now - offset * 86400))
        pipe.set(f"stat:processed:{day}", 5000 + offset)
        pipe.set(f"stat:failed:{day}", 10 + offset)
    del today
    for q in ("default", "critical", "mailers", "low", "imports", "webhooks"):
        pipe.sadd("queues", q)
        for i in range(20):
            pipe.lpush(f"queue:{q}", json.dumps({"class": "Job", "args": [i], "jid": f"{q}{i:020d}", "queue": q,
                                                 "enqueued_at": now - 60 + i, "created_at": now - 60 + i}))
    for set_name in ("retry", "schedule", "dead"):
        for i in range(50):
            pipe.zadd(set_name, {json.dumps({"class": "Job", "args": [i], "jid": f"{set_name}{i:018d}",
                                             "queue": "default", "error_class": "E", "error_message": "m"}):
                                 now + i})
    for p in range(3):
        identity = f"web.{p}:{1000 + p}:abcdef{p:06d}"
        pipe.sadd("processes", identity)
        pipe.hset(identity, mapping={"info": json.dumps({"hostname": f"web.{p}", "pid": 1000 + p, "concurrency": 10,
                                                         "queues": ["default"], "started_at": now - 100}),
                                     "busy": 2, "beat": now, "quiet": "false"})
        for t in range(2):
            pipe.hset(f"{identity}:work", f"tid{t}", json.dumps(
                {"queue": "default", "payload": json.dumps({"class": "Job", "jid": f"run{p}{t}", "args": []}),
                 "run_at": int(now)}))
    pipe.execute()


def signed_in_client(application):
    from auth import USER_SESSION_KEY, User

    client = application.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "bench"
        session[USER_SESSION_KEY] = User(login="bench", orgs=("acme",), membership_checked_at=time.time()).to_session()
    return client


def timed(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--delay", type=float, default=0.001, help="proxy delay per direction, seconds")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")

    import app as app_module
    from config import load_settings

    workdir = tempfile.mkdtemp(prefix="kiqboard-bench-")
    servers, maps = [], []
    proxy = None
    try:
        for n in range(max(POOL_COUNTS)):
            port = free_port()
            servers.append(start_redis(port, tempfile.mkdtemp(dir=workdir)))
            seed(redis.Redis(port=port), n)
            maps.append((free_port(), port))
        proxy = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "tcp_proxy.py"), "--delay", str(args.delay),
             *[arg for listen, port in maps for arg in ("--map", f"{listen}:127.0.0.1:{port}")]],
            stdout=subprocess.PIPE, text=True,
        )
        assert proxy.stdout is not None and proxy.stdout.readline().strip() == "ready"

        ping = redis.Redis(port=maps[0][0])
        ping.ping()
        rtt = statistics.median(timed(ping.ping, 200))

        env = {"GITHUB_CLIENT_ID": "bench", "GITHUB_CLIENT_SECRET": "bench", "GITHUB_ORG": "acme",
               "SECRET_KEY": "bench-secret-key-0123456789abcdef"}
        setups = {}
        for count in POOL_COUNTS:
            pool_env = dict(env, **{f"REDIS_{n + 1}": f"redis://127.0.0.1:{maps[n][0]}/0" for n in range(count)})
            application = app_module.create_app(load_settings(pool_env))
            client = signed_in_client(application)
            pools = list(application.extensions["kiqboard"]["pools"].values())
            for _ in range(5):  # warm-up: connections, Lua script cache, thread pool
                assert client.get("/api/pools").status_code == 200
                client.get("/")
            body = client.get("/api/pools").get_json()
            assert [p["status"] for p in body["pools"]] == ["up"] * count, body
            setups[count] = (client, pools)

        # The harness's own floor: one PING per pool, all sent before any reply is read (one thread, no app).
        def ping_fan_out(pools) -> None:
            conns = [pool.redis.connection_pool.get_connection() for pool in pools]
            for conn in conns:
                conn.send_command("PING")
            for conn in conns:
                conn.read_response()
            for pool, conn in zip(pools, conns):
                pool.redis.connection_pool.release(conn)

        # Interleaved rounds (1, 5, 10, 1, 5, 10, …) so a busy machine skews every column alike.
        results = {count: {"api": [], "html": [], "read": [], "seq": [], "floor": []} for count in POOL_COUNTS}
        rounds = max(1, args.requests // 10)
        for _ in range(rounds):
            for count in POOL_COUNTS:
                client, pools = setups[count]
                r = results[count]
                r["api"] += timed(lambda: client.get("/api/pools"), 10)
                r["html"] += timed(lambda: client.get("/"), 10)
                r["read"] += timed(lambda: pools[0].reader.overview(days=7), 5)
                r["floor"] += timed(lambda: ping_fan_out(pools), 10)

                def sequential():
                    for pool in pools:
                        pool.reader.overview(days=7)

                r["seq"] += timed(sequential, 2)

        med = statistics.median
        base_api = med(results[1]["api"])
        base_html = med(results[1]["html"])
        try:
            import hiredis  # noqa: F401

            parser = "hiredis"
        except ImportError:
            parser = "pure-Python RESP parser (no hiredis)"
        print(f"proxy: {args.delay * 1000:g} ms each way; measured PING round trip through it: {rtt:.2f} ms; "
              f"redis-py {redis.__version__}, {parser}; {os.cpu_count()} CPUs")
        print(f"{rounds * 10} requests per figure in {rounds} interleaved rounds, Flask test client, 1 process; "
              "medians (p90) in ms\n")
        print("| pools | GET /api/pools | × 1 pool | GET / (HTML) | × 1 pool | one pool's read | "
              "all pools read one after another | harness floor: 1 PING per pool, fanned out |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for count in POOL_COUNTS:
            r = results[count]
            api_median, html_median = med(r["api"]), med(r["html"])
            print(f"| {count} | {api_median:.2f} ({p90(r['api']):.2f}) | {api_median / base_api:.2f}× "
                  f"| {html_median:.2f} ({p90(r['html']):.2f}) | {html_median / base_html:.2f}× "
                  f"| {med(r['read']):.2f} | {med(r['seq']):.2f} | {med(r['floor']):.2f} |")
        ratio = med(results[POOL_COUNTS[-1]]["api"]) / base_api
        print(f"\n{POOL_COUNTS[-1]} pools / 1 pool (GET /api/pools): {ratio:.2f}× — goal ≤ 1.5×: "
              f"{'met' if ratio <= 1.5 else 'NOT met'}")
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(5)
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
