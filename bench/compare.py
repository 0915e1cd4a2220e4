"""kiqboard vs Sidekiq 6.4.1's own Web UI on the same Redis data: latency per page, throughput, RSS, Redis trips.

    .venv/bin/python bench/compare.py                 # loopback
    .venv/bin/python bench/compare.py --rtt 2         # both servers reach Redis through bench/tcp_proxy.py-style
                                                      # proxy adding RTT/2 ms each way
    options: --requests N (per page per server, default 40) --duration S (throughput seconds per run, default 8)

What it does (loopback only; every child process is stopped on exit, also on Ctrl-C):
1. A redis-server 7.0 on a free port, seeded with server-side Lua in Sidekiq 6.4 shapes (client.rb's
   class/args/retry/queue/jid/created_at/enqueued_at; job_retry.rb's error_message/error_class/failed_at/retry_count/
   retried_at): 100,000 retries, 50,000 dead, 25,000 scheduled, 20 queues x 5,000 jobs, 50 processes (the
   `processes` set, IDENTITY hash info/busy/beat/quiet/rss/rtt_us, IDENTITY:workers as Sidekiq 6.4.1 writes it,
   2 running jobs each = 100, so both UIs show every running job on one page; EXPIRE 3 h), 180 days of history.
2. Sidekiq Web under puma: bench/sidekiq_web/config.ru, `puma -t 8:8 -w 0` (one process, 8 threads, Redis pool 8).
3. kiqboard under the Procfile's command (gunicorn 'app:create_app()' + gunicorn.conf.py: gunicorn_worker.py's gthread), twice:
   "kiqboard 1x8" (WEB_CONCURRENCY=1, GUNICORN_THREADS=8: the same shape as puma's) and "kiqboard default"
   (gunicorn.conf.py's defaults: 2 workers x 8 threads). max_requests off so no worker restarts mid-run.
   Signed in through tests/fake_github.py's FakeGitHub run in this process (real OAuth dance over HTTP).
4. Per page (a lean keep-alive http.client connection per server, cookie header for kiqboard): warm-up, then `--requests` rounds; each round requests the page once from every server, in an order
   rotated each round (alternating, so machine load hits all alike). Median and p90 ms, ratio of medians, geomean.
5. Throughput: 8 client threads (a requests.Session each) cycling through all pages for `--duration` s per server,
   servers in turn, two rounds (mean of both). RSS from /proc/PID/status (puma; gunicorn master + workers).
6. Redis per page (one request at a time, the best of 3): "trips" = request bursts (client bytes sent after a reply,
   per connection) and "cmds" = top-level commands (RESP arrays parsed) counted in the proxy; "srv" = the
   INFO commandstats delta (includes commands run inside Lua scripts). Without --rtt a counting proxy (1 ms each
   way, so a pipeline written in several send()s is not split by an early reply) and a fresh set of servers are
   started for this step only, after the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import http.client
import itertools
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

N_RETRY, N_DEAD, N_SCHED = 100_000, 50_000, 25_000
N_QUEUES, QUEUE_JOBS = 20, 5_000
N_PROCS, BUSY_PER_PROC = 50, 2
HISTORY_DAYS = 180
SIDEKIQ_WEB = ROOT / "bench" / "sidekiq_web" / "config.ru"
CHILDREN: list[subprocess.Popen] = []


# ------------------------------------------------------------------------------------------- counting proxy (child)

def proxy_child(listen: int, target: int, control: int, delay: float) -> None:
    """tcp_proxy.py's _Side, counting request bursts and top-level RESP commands; a control port reports them."""
    import tcp_proxy

    counts = {"bursts": 0, "commands": 0}

    class Client(tcp_proxy._Side):
        def __init__(self, d: float) -> None:
            super().__init__(d)
            self.replied = True
            self.buf = bytearray()

        def data_received(self, data: bytes) -> None:
            if self.replied:
                counts["bursts"] += 1
                self.replied = False
            self.buf += data
            counts["commands"] += self._parse()
            super().data_received(data)

        def _parse(self) -> int:
            buf, pos, n_cmds = self.buf, 0, 0
            for _ in range(1_000_000):  # bounded: one iteration per complete command
                if pos >= len(buf):
                    break
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                if buf[pos] != 0x2A:  # inline command
                    pos, n_cmds = line_end + 2, n_cmds + 1
                    continue
                p, ok = line_end + 2, True
                for _ in range(int(buf[pos + 1:line_end])):
                    j = buf.find(b"\r\n", p)
                    if j < 0:
                        ok = False
                        break
                    p = j + 2 + int(buf[p + 1:j]) + 2
                    if p > len(buf):
                        ok = False
                        break
                if not ok:
                    break
                pos, n_cmds = p, n_cmds + 1
            del buf[:pos]
            return n_cmds

    class Upstream(tcp_proxy._Side):
        def data_received(self, data: bytes) -> None:
            if self.peer is not None:
                self.peer.replied = True
            super().data_received(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def report(reader, writer) -> None:
            writer.write(f"{counts['bursts']} {counts['commands']}\n".encode())
            await writer.drain()
            writer.close()

        await tcp_proxy.serve(listen, "127.0.0.1", target, delay, client_class=Client, upstream_class=Upstream)
        await asyncio.start_server(report, "127.0.0.1", control)
        print("ready", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        os._exit(0)

    asyncio.run(main())


class Proxy:
    def __init__(self, target: int, delay: float) -> None:
        from conftest import free_port

        self.port, self.control = free_port(), free_port()
        self.process = spawn([sys.executable, __file__, "--proxy-child", str(self.port), str(target),
                              str(self.control), str(delay)], stdout=subprocess.PIPE)
        line = self.process.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError("proxy did not start")

    def counts(self) -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", self.control), timeout=5) as sock:
            data = sock.makefile().readline().split()
        return int(data[0]), int(data[1])


# ------------------------------------------------------------------------------------------- processes

def spawn(argv, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    CHILDREN.append(process)
    return process


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def stop_all() -> None:
    for process in reversed(CHILDREN):
        stop(process)


def rss_kb(pid: int | None) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


class Puma:
    name = "Sidekiq Web"

    def __init__(self, redis_url: str) -> None:
        from conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = ""
        env = {**os.environ, "REDIS_URL": redis_url, "REDIS_POOL_SIZE": "8", "RACK_ENV": "production",
               "SESSION_SECRET": "s" * 64}
        self.log = tempfile.NamedTemporaryFile(prefix="kiqboard-puma-", suffix=".log", delete=False)
        self.process = spawn(["puma", "-b", f"tcp://127.0.0.1:{self.port}", "-t", "8:8", "-w", "0",
                              "-e", "production", str(SIDEKIQ_WEB)], env=env, cwd=str(ROOT),
                             stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/stats", self.process)

    def rss(self) -> str:
        return f"{rss_kb(self.process.pid) / 1024:.0f}"

    def session(self):
        import requests

        return requests.Session()

    def stop(self) -> None:
        stop(self.process)


class Kiqboard:
    def __init__(self, name: str, redis_url: str, github, workers: int, threads: int) -> None:
        from conftest import free_port
        from faults_support import Gunicorn
        from fake_github import CLIENT_ID, CLIENT_SECRET

        self.name = name
        env = {
            "REDIS_1": redis_url, "GITHUB_CLIENT_ID": CLIENT_ID, "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
            "GITHUB_ORG": "acme", "GITHUB_URL": github.url, "GITHUB_API_URL": github.api_url,
            "SECRET_KEY": "kiqboard-bench-secret-key-0123456789abcdef", "MEMBERSHIP_TTL": "86400",
            "LOG_LEVEL": "ERROR",
        }
        self.server = Gunicorn(env, free_port(), workers=workers, threads=threads, max_requests=0).start()
        CHILDREN.append(self.server.process)  # stop_all() reaches it even if signing in fails
        self.url = self.server.url
        self.prefix = "/sidekiq"
        self.cookie = self.sign_in(github)

    def sign_in(self, github) -> str:
        """The real OAuth dance against the fake GitHub: /auth/github → authorize (auto-approve) → callback."""
        import requests

        with requests.Session() as s:
            r = s.get(self.url + "/auth/github?next=/sidekiq/", allow_redirects=False, timeout=10)
            authorize = r.headers["Location"]
            r = requests.get(authorize, allow_redirects=False, timeout=10)
            callback = r.headers["Location"]
            r = s.get(callback, allow_redirects=False, timeout=10)
            if r.status_code != 302 or "kiqboard_session" not in s.cookies:
                raise RuntimeError(f"sign-in failed: {r.status_code} {r.text[:300]}")
            return s.cookies["kiqboard_session"]

    def session(self):
        import requests

        s = requests.Session()
        s.cookies.set("kiqboard_session", self.cookie, domain="127.0.0.1", path="/")
        return s

    def rss(self) -> str:
        master = rss_kb(self.server.master_pid())
        workers = list(self.server.worker_rss_kb().values())
        return f"{(master + sum(workers)) / 1024:.0f} (master {master / 1024:.0f} + " + \
            " + ".join(f"{w / 1024:.0f}" for w in workers) + ")"

    def stop(self) -> None:
        self.server.stop()


# ------------------------------------------------------------------------------------------- seeding

SEED_ZSET = r"""
-- KEYS[1] set; ARGV: first, last, base score, step, kind ('retry'|'dead'|'schedule'), now
local key, first, last = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local base, step, kind, now = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local classes = {'HardWorker', 'MailerWorker', 'Billing::InvoiceJob', 'ReportWorker'}
local args = {}
for i = first, last do
  local jid = string.format('%s%021x', string.sub(kind, 1, 3), i)
  local queue = string.format('q%02d', i % 20)
  local job = '{"class":"' .. classes[i % 4 + 1] .. '","args":[' .. i .. ',"user-' .. i .. '",{"account_id":' ..
    (i % 977) .. ',"force":false}],"retry":true,"queue":"' .. queue .. '","jid":"' .. jid ..
    '","created_at":' .. now .. '.25'
  if kind ~= 'schedule' then
    job = job .. ',"enqueued_at":' .. now .. '.5,"error_message":"undefined method `total\' for nil:NilClass (' ..
      i .. ')","error_class":"NoMethodError","failed_at":' .. now .. '.75,"retry_count":' .. (i % 25)
    if i % 25 > 0 then job = job .. ',"retried_at":' .. now .. '.875' end
  end
  job = job .. '}'
  args[#args + 1] = tostring(base + i * step)
  args[#args + 1] = job
  if #args >= 2000 then redis.call('ZADD', key, unpack(args)); args = {} end
end
if #args > 0 then redis.call('ZADD', key, unpack(args)) end
return 1
"""

SEED_LIST = r"""
local key, queue, n, now = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local args = {}
for i = 1, n do
  args[#args + 1] = '{"class":"HardWorker","args":[' .. i .. ',"user-' .. i .. '",{"account_id":' .. (i % 977) ..
    '}],"retry":true,"queue":"' .. queue .. '","jid":"' .. string.format('%s%021x', queue, i) ..
    '","created_at":' .. now .. '.25,"enqueued_at":' .. now .. '.5}'
  if #args >= 1000 then redis.call('LPUSH', key, unpack(args)); args = {} end
end
if #args > 0 then redis.call('LPUSH', key, unpack(args)) end
return 1
"""


def seed(client) -> dict:
    import json

    now = int(time.time())
    client.flushall()
    zset, lst = client.register_script(SEED_ZSET), client.register_script(SEED_LIST)
    chunk = 25_000
    for name, count, base, step in (("retry", N_RETRY, now + 60, 1), ("dead", N_DEAD, now - N_DEAD - 10, 1),
                                    ("schedule", N_SCHED, now + 3600, 1)):
        kind = name
        for first in range(0, count, chunk):
            zset(keys=[name], args=[first, min(first + chunk, count) - 1, base, step, kind, now])
    queues = [f"q{i:02d}" for i in range(N_QUEUES)]
    for q in queues:
        lst(keys=[f"queue:{q}"], args=[q, QUEUE_JOBS, now])
    pipe = client.pipeline(transaction=False)
    pipe.sadd("queues", *queues)
    pipe.set("stat:processed", 987_654_321)
    pipe.set("stat:failed", 1_234_567)
    for day in range(HISTORY_DAYS):
        date = time.strftime("%Y-%m-%d", time.gmtime(now - day * 86400))
        pipe.set(f"stat:processed:{date}", 500_000 + day * 71)
        pipe.set(f"stat:failed:{date}", 100 + day)
    for p in range(N_PROCS):
        identity = f"worker-{p:02d}.bench:{1000 + p}:{p:012x}"
        info = {"hostname": f"worker-{p:02d}.bench", "started_at": now - 3600 - p, "pid": 1000 + p, "tag": "bench",
                "concurrency": 10, "queues": queues, "labels": [], "identity": identity}
        pipe.sadd("processes", identity)
        pipe.hset(identity, mapping={"info": json.dumps(info), "busy": BUSY_PER_PROC, "beat": time.time(),
                                     "quiet": "false", "rss": 234_567 + p, "rtt_us": 150})
        pipe.expire(identity, 3 * 3600)
        for t in range(BUSY_PER_PROC):
            payload = json.dumps({"class": "HardWorker", "args": [p, t, "x" * 20], "retry": True,
                                  "queue": queues[t], "jid": f"w{p:02d}{t:021x}", "created_at": now - 60.5,
                                  "enqueued_at": now - 30.5})
            work = {"queue": queues[t], "payload": payload, "run_at": now - (p * 7 + t) % 300}
            pipe.hset(f"{identity}:workers", f"tid{p}x{t}", json.dumps(work))
        pipe.expire(f"{identity}:workers", 3 * 3600)
    pipe.execute()
    return {"retry_key": f"{float(now + 60 + 54321)!r}-ret{54321:021x}"}


# ------------------------------------------------------------------------------------------- measuring

def pages(retry_key: str) -> list[tuple[str, str]]:
    last_retry_page = -(-N_RETRY // 25)
    return [
        ("dashboard", "/"), ("busy", "/busy"), ("queues", "/queues"), ("queue", "/queues/q00"),
        ("queue page 200 (last)", f"/queues/q01?page={QUEUE_JOBS // 25}"), ("retries", "/retries"),
        (f"retries page {last_retry_page} (last)", f"/retries?page={last_retry_page}"), ("dead", "/morgue"),
        ("scheduled", "/scheduled"), ("retry job", f"/retries/{retry_key}"), ("/stats", "/stats"),
        ("/stats/queues", "/stats/queues"),
    ]


def get(session, server, path: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    base = "" if isinstance(session, LeanClient) else server.url
    r = session.get(base + server.prefix + path, timeout=60, allow_redirects=False)
    body = r.content
    return time.perf_counter() - started, r.status_code, len(body)


class LeanClient:
    """One keep-alive http.client connection: ~0.1 ms of client CPU per request instead of requests' ~1 ms, so the
    latency medians are mostly server time (the same client for every server)."""

    def __init__(self, server) -> None:
        import requests.utils

        cookie = getattr(server, "cookie", None)
        # Like a browser: the User-Agent it signed in with, and every cookie the server sets sent back (kiqboard's
        # session, and Rack's session for Sidekiq Web: without it Rack would mint a new session on every request).
        self.headers = {"User-Agent": requests.utils.default_user_agent()}
        self.cookies = {"kiqboard_session": cookie} if cookie else {}
        self.connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=60)

    def keep_cookie(self, response) -> None:
        for header in response.headers.get_all("Set-Cookie") or ():
            name, _, value = header.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()

    def get(self, path: str, timeout: float = 60, allow_redirects: bool = False):
        for attempt in range(2):  # one reconnect if the server closed an idle keep-alive connection
            try:
                cookies = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
                self.connection.request("GET", path, headers={**self.headers, "Cookie": cookies} if cookies
                                        else self.headers)
                response = self.connection.getresponse()
                response.content = response.read()
                response.status_code = response.status
                self.keep_cookie(response)
                return response
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


def latencies(servers, page_list, n: int, warm: int = 3):
    sessions = [LeanClient(s) for s in servers]
    out = {}
    for label, path in page_list:
        for _ in range(warm):
            for server, session in zip(servers, sessions):
                _, status, _ = get(session, server, path)
                if status != 200:
                    raise RuntimeError(f"{server.name} {path}: HTTP {status}")
        times = [[] for _ in servers]
        sizes = [0] * len(servers)
        for round_ in range(n):
            order = list(range(len(servers)))
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            for i in order:
                elapsed, status, size = get(sessions[i], servers[i], path)
                if status != 200:
                    raise RuntimeError(f"{servers[i].name} {path}: HTTP {status}")
                times[i].append(elapsed)
                sizes[i] = size
        out[label] = [(statistics.median(t) * 1000, quantile(t, 0.9) * 1000, size) for t, size in zip(times, sizes)]
        print(f"  {label:28s} " + "  ".join(f"{s.name}: {m:7.2f} ms" for s, (m, _, _) in zip(servers, out[label])),
              file=sys.stderr, flush=True)
    return out


def quantile(values, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def throughput(server, page_list, duration: float, clients: int = 8) -> tuple[float, int]:
    paths = [p for _, p in page_list]
    done, errors, lock = [0], [0], threading.Lock()
    deadline = time.monotonic() + duration

    def client(k: int) -> None:
        session = server.session()
        for i in itertools.count(k):
            if time.monotonic() >= deadline:
                break
            try:
                _, status, _ = get(session, server, paths[i % len(paths)])
                ok = status == 200
            except Exception:  # noqa: BLE001 - counted
                ok = False
            with lock:
                done[0] += ok
                errors[0] += not ok
        session.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 90)
    return done[0] / (time.monotonic() - started), errors[0]


def commandstats(admin) -> dict[str, int]:
    return {k: int(v["calls"]) for k, v in admin.info("commandstats").items()}


def redis_counts(servers, page_list, admin, proxy: Proxy):
    """{label: [(trips, cmds, srv) per server]}: best (min) of 3 single requests."""
    out = {}
    sessions = [s.session() for s in servers]
    for label, path in page_list:
        row = []
        for server, session in zip(servers, sessions):
            get(session, server, path)  # warm
            best = None
            for _ in range(3):
                before_stats, before = commandstats(admin), proxy.counts()
                get(session, server, path)
                after, after_stats = proxy.counts(), commandstats(admin)
                srv = sum(after_stats.values()) - sum(before_stats.values()) - 1  # our own INFO before
                sample = (after[0] - before[0], after[1] - before[1], srv)
                best = sample if best is None else min(best, sample)
            row.append(best)
        out[label] = row
    return out


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({model})"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------------------------------- main

def start_servers(redis_url: str, github, with_default: bool = True):
    servers = [Puma(redis_url)]
    servers.append(Kiqboard("kiqboard 1x8", redis_url, github, workers=1, threads=8))
    if with_default:
        servers.append(Kiqboard("kiqboard default", redis_url, github, workers=2, threads=8))
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt", type=float, default=0.0, help="round trip to Redis in ms, through a proxy")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page per server")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--no-default", action="store_true", help="skip kiqboard's default 2x8 configuration")
    args = parser.parse_args()

    from conftest import RedisServer
    from fake_github import FakeGitHub

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    redis_server = RedisServer().start()
    atexit.register(redis_server.cleanup)
    github = FakeGitHub().start()
    servers = []
    try:
        admin = redis_server.client()
        started = time.perf_counter()
        info = seed(admin)
        print(f"seeded in {time.perf_counter() - started:.1f} s, {admin.dbsize()} keys, "
              f"{admin.info('memory')['used_memory_human']}", file=sys.stderr)
        proxy = Proxy(redis_server.port, args.rtt / 2000) if args.rtt else None
        redis_url = f"redis://127.0.0.1:{proxy.port}/0" if proxy else redis_server.url
        servers = start_servers(redis_url, github, not args.no_default)
        page_list = pages(info["retry_key"])
        load_before = load()
        print(f"latency, {args.requests} alternating rounds per page (load {load_before})", file=sys.stderr)
        lat = latencies(servers, page_list, args.requests)
        print("throughput, 8 clients", file=sys.stderr)
        tput = {s.name: [] for s in servers}
        errs = {s.name: 0 for s in servers}
        for _ in range(2):
            for server in servers:
                rate, errors = throughput(server, page_list, args.duration)
                tput[server.name].append(rate)
                errs[server.name] += errors
                print(f"  {server.name}: {rate:.1f} req/s ({errors} errors)", file=sys.stderr, flush=True)
        rss = {s.name: s.rss() for s in servers}
        load_after = load()
        if proxy is None:
            for server in servers:
                server.stop()
            # 1 ms each way: with no delay a reply can overtake a client's pipeline written in several send()s and
            # split one trip into two; counting needs the delay, not the timings.
            proxy = Proxy(redis_server.port, 0.001)
            servers = start_servers(f"redis://127.0.0.1:{proxy.port}/0", github, with_default=False)
        counts = redis_counts(servers[:2], page_list, admin, proxy)
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        github.stop()
        stop_all()
        redis_server.cleanup()

    names = ["Sidekiq Web", "kiqboard 1x8"] + ([] if args.no_default else ["kiqboard default"])
    mode = f"{args.rtt:g} ms RTT to Redis (proxy)" if args.rtt else "loopback (direct)"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()}, {mode}, "
          f"load average {load_before} → {load_after}; {args.requests} alternating rounds per page")
    head = "| page | Sidekiq Web ms (p90) | kiqboard 1x8 ms (p90) | ratio |"
    sep = "|---|---:|---:|---:|"
    if not args.no_default:
        head += " kiqboard default ms | ratio |"
        sep += "---:|---:|"
    head += " trips S / k | cmds S / k | srv cmds S / k | KB S / k |"
    sep += "---:|---:|---:|---:|"
    print(head)
    print(sep)
    ratios = {n: [] for n in names[1:]}
    for label, _ in page_list:
        row = lat[label]
        cells = [f"{row[0][0]:.1f} ({row[0][1]:.1f})"]
        for i, name in enumerate(names[1:], 1):
            ratio = row[i][0] / row[0][0]
            ratios[name].append(ratio)
            cells.append(f"{row[i][0]:.1f} ({row[i][1]:.1f})" if i == 1 else f"{row[i][0]:.1f}")
            cells.append(f"{'**' if ratio > 1 else ''}{ratio:.2f}{'**' if ratio > 1 else ''}")
        c = counts[label]
        cells += [f"{c[0][0]} / {c[1][0]}", f"{c[0][1]} / {c[1][1]}", f"{c[0][2]} / {c[1][2]}",
                  f"{row[0][2] / 1024:.0f} / {row[1][2] / 1024:.0f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    geo = {n: math.exp(statistics.fmean(math.log(r) for r in rs)) for n, rs in ratios.items()}
    print("| **geometric mean** | | | **" + f"{geo[names[1]]:.2f}" + "** |" +
          ("" if args.no_default else f" | **{geo[names[2]]:.2f}** |") + " | | | |")
    print("\n| server | config | throughput, 8 clients, all pages (req/s, 2 × "
          f"{args.duration:g} s) | errors | RSS after (MB) |")
    print("|---|---|---:|---:|---:|")
    configs = {"Sidekiq Web": "puma 5.6 -w 0 -t 8:8, Redis pool 8",
               "kiqboard 1x8": "gunicorn (fast-track gthread) WEB_CONCURRENCY=1 GUNICORN_THREADS=8",
               "kiqboard default": "gunicorn (fast-track gthread) 2 workers × 8 threads (gunicorn.conf.py defaults)"}
    for name in names:
        print(f"| {name} | {configs[name]} | {statistics.fmean(tput[name]):.1f} "
              f"({' / '.join(f'{t:.1f}' for t in tput[name])}) | {errs[name]} | {rss[name]} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--proxy-child":
        proxy_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(main())
