"""Load under gunicorn with one pool hung: every request answers, healthy pages stay fast, memory stays flat.

    .venv/bin/python bench/load.py [--burst 200] [--requests 10000] [--concurrency 32] [--workers 2] [--threads 8]

Starts two real redis-servers ("healthy", seeded with Sidekiq-shaped data, and "hung", seeded too and then stopped
with SIGSTOP: it accepts connections but never answers) and the Procfile's command (gunicorn 'app:create_app()'
with gunicorn.conf.py, bound to 127.0.0.1, max_requests off so worker RSS is comparable over the whole run).

1. Burst: `--burst` requests at once (one thread and one TCP connection each, released by a barrier), mixing every
   page of the healthy pool, every page of the hung pool and the overview (/, /api/pools, /metrics). Each must
   answer 200 or 503 within the client timeout (gunicorn's 30 s + 5 s); none may error out. A control burst with
   both pools answering runs first: the healthy pool's latencies in the two bursts are what "not slowed" means.
2. Steady: `--requests` requests over `--concurrency` keep-alive connections, same mix, the hung pool still hung.
   Worker RSS is sampled every 500 requests; the growth from the first 1,000 requests to the end is reported.

Prints latency percentiles per kind of page and a Markdown summary for BENCHMARKS.md. Exit status 1 when any
request errored, hung, or answered something other than 200/503, or a healthy page was not 200.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402

from tests.conftest import RedisServer, free_port  # noqa: E402
from tests.faults_support import GITHUB_ENV, Gunicorn, hung, pool_paths, seed_pool, session_cookie  # noqa: E402

CLIENT_TIMEOUT = 35.0  # gunicorn.conf.py's worker timeout (30 s) + slack: "hung" means no answer by then
OVERVIEW_PATHS = ["/", "/api/pools", "/metrics"]


@dataclass
class Result:
    kind: str  # "healthy" | "hung" | "overview"
    path: str
    status: int | None
    elapsed: float
    error: str | None = None


def kind_of(path: str) -> str:
    if path.startswith("/healthy/"):
        return "healthy"
    if path.startswith("/hung/"):
        return "hung"
    return "overview"


def mix(retry_key: str | None) -> list[str]:
    healthy = pool_paths("healthy", retry_key)
    stuck = pool_paths("hung", retry_key)
    # Interleaved: healthy, hung, healthy, hung, …, with an overview page every fifth request.
    out: list[str] = []
    overview = itertools.cycle(OVERVIEW_PATHS)
    for i, (a, b) in enumerate(zip(itertools.cycle(healthy), stuck * 2)):
        out += [a, b]
        if i % 2 == 1:
            out.append(next(overview))
    return out


def fetch(session: requests.Session, base: str, path: str) -> Result:
    started = time.monotonic()
    try:
        response = session.get(base + path, timeout=CLIENT_TIMEOUT, allow_redirects=False)
        body = response.content
        status = response.status_code
        error = None
        if status == 503 and kind_of(path) == "hung" and b"hung" not in body:
            error = "503 without the pool's name"
    except requests.RequestException as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"
    return Result(kind_of(path), path, status, time.monotonic() - started, error)


def new_session(cookie: str) -> requests.Session:
    session = requests.Session()
    session.cookies.set("kiqboard_session", cookie, domain="127.0.0.1", path="/")
    return session


def burst(base: str, cookie: str, paths: list[str], n: int) -> list[Result]:
    barrier = threading.Barrier(n)
    results: list[Result | None] = [None] * n

    def one(i: int) -> None:
        session = new_session(cookie)
        barrier.wait(30)
        results[i] = fetch(session, base, paths[i % len(paths)])
        session.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT + 30)
    return [r if r is not None else Result("?", "?", None, CLIENT_TIMEOUT, "client thread never finished")
            for r in results]


def steady(base: str, cookie: str, paths: list[str], n: int, concurrency: int, server: Gunicorn | None,
           sample_every: int = 500) -> tuple[list[Result], list[tuple[int, int]]]:
    local = threading.local()
    results: list[Result] = []
    samples: list[tuple[int, int]] = []  # (requests done, total worker RSS in KB)
    lock = threading.Lock()

    def one(path: str) -> Result:
        if not hasattr(local, "session"):
            local.session = new_session(cookie)
        result = fetch(local.session, base, path)
        with lock:
            results.append(result)
            done = len(results)
        if server is not None and done % sample_every == 0:
            rss = sum(server.worker_rss_kb().values())
            with lock:
                samples.append((done, rss))
        return result

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, (paths[i % len(paths)] for i in range(n))))
    return results, sorted(samples)


def check(results: list[Result]) -> list[str]:
    problems = []
    for r in results:
        if r.error:
            problems.append(f"{r.path}: {r.error}")
        elif r.status not in (200, 503):
            problems.append(f"{r.path}: HTTP {r.status}")
        elif r.kind in ("healthy", "overview") and r.status != 200:
            problems.append(f"{r.path}: HTTP {r.status} on a healthy page")
    return problems


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]  # noqa: E731
    return f"p50 {q(0.5) * 1000:.0f} ms, p95 {q(0.95) * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"


def summarize(title: str, results: list[Result]) -> None:
    by_kind: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r)
    print(f"\n{title}: {len(results)} requests")
    for kind, rs in sorted(by_kind.items()):
        statuses = Counter(r.status for r in rs)
        print(f"  {kind:9s} {len(rs):6d}  statuses {dict(statuses)}  {percentiles([r.elapsed for r in rs])}")


def start(workers: int, threads: int, jobs: int = 200) -> tuple[dict, Gunicorn, str, str | None]:
    servers = {"healthy": RedisServer().start(), "hung": RedisServer().start()}
    now = float(int(time.time()))
    retry_key = seed_pool(servers["healthy"].client(), jobs, now)["retry_key"]
    seed_pool(servers["hung"].client(), jobs, now)
    env = {
        "REDIS_1": servers["healthy"].url, "REDIS_1_NAME": "healthy",
        "REDIS_2": servers["hung"].url, "REDIS_2_NAME": "hung",
        "LOG_LEVEL": "ERROR", **GITHUB_ENV,
    }
    server = Gunicorn(env, free_port(), workers=workers, threads=threads, max_requests=0).start()
    return servers, server, session_cookie(), retry_key


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    servers, server, cookie, retry_key = start(args.workers, args.threads)
    paths = mix(retry_key)
    problems: list[str] = []
    try:
        # Warm up (script cache, connections) with both pools answering, so the burst measures the fault.
        _, _ = steady(server.url, cookie, [p for p in paths if not p.startswith("/hung/")], 200, 8, None)
        # Control: the same burst with both pools answering (what the machine itself costs).
        began = time.monotonic()
        control = burst(server.url, cookie, paths, args.burst)
        summarize(f"Control burst ({time.monotonic() - began:.1f} s, both pools answering)", control)
        problems += check(control)
        with hung(servers["hung"]):
            began = time.monotonic()
            results = burst(server.url, cookie, paths, args.burst)
            burst_seconds = time.monotonic() - began
            summarize(f"Burst ({burst_seconds:.1f} s, hung pool SIGSTOPped)", results)
            problems += check(results)
            burst_results = results

            rss_before = sum(server.worker_rss_kb().values())
            began = time.monotonic()
            results, samples = steady(server.url, cookie, paths, args.requests, args.concurrency, server)
            steady_seconds = time.monotonic() - began
            summarize(f"Steady ({steady_seconds:.1f} s, {args.concurrency} connections, hung pool SIGSTOPped)",
                      results)
            problems += check(results)
        rss_after = sum(server.worker_rss_kb().values())
        print("\nworker RSS (KB, all workers) every 500 requests:", " ".join(f"{d}:{kb}" for d, kb in samples))
        baseline = next((kb for d, kb in samples if d >= 1000), rss_before)
        print(f"RSS: after the burst {rss_before} KB, after 1,000 steady requests {baseline} KB, "
              f"at the end {rss_after} KB ({(rss_after - baseline) / 1024:+.1f} MB over "
              f"{args.requests - 1000:,} requests)")
        healthy = [r.elapsed for r in burst_results if r.kind == "healthy"]
        steady_healthy = [r.elapsed for r in results if r.kind == "healthy"]
        print("\nMarkdown:")
        print(f"| control burst | {args.burst} at once, no fault | {Counter(r.status for r in control)} | healthy "
              f"pages {percentiles([r.elapsed for r in control if r.kind == 'healthy'])} | "
              f"{len(check(control))} errors |")
        print(f"| burst | {args.burst} at once | {Counter(r.status for r in burst_results)} | healthy pages "
              f"{percentiles(healthy)} | {len(check(burst_results))} errors |")
        print(f"| steady | {args.requests:,} over {args.concurrency} | "
              f"{Counter(r.status for r in results)} | healthy pages {percentiles(steady_healthy)} | "
              f"RSS {baseline / 1024:.1f} → {rss_after / 1024:.1f} MB | {len(check(results))} errors |")
        breaker_lines = [line for line in server.read_log().splitlines() if "Traceback" in line]
        if breaker_lines:
            problems.append(f"{len(breaker_lines)} tracebacks in gunicorn's log")
    finally:
        server.stop()
        for s in servers.values():
            s.cleanup()
    for problem in problems[:20]:
        print("PROBLEM:", problem)
    print("OK" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
