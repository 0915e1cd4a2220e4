"""Chaos for actions: real Sidekiq + its scheduler poller + the UI's retry/kill/delete in parallel + Redis restarts.

    .venv/bin/python bench/chaos_actions.py [--seconds 60] [--restarts 3] [--jobs 3000] [--ui-threads 4] [--sidekiqs 2]

- One real redis-server with `appendonly yes` + `appendfsync always` (every acknowledged write survives a restart).
- `--sidekiqs` real `sidekiq` processes (Debian ruby-sidekiq, tests/ruby/worker_app.rb, scheduler poll 0.5 s) work
  queue "default" (PlainWorker: records its jid in kiqboard-test:executed).
- Seeded: `--jobs` PlainWorker jobs spread over the retry set (due now or in the next seconds: the poller races the
  UI for them), the schedule set, the dead set and the queue; a feeder keeps adding more during the run.
- `--ui-threads` threads drive the real Flask app (test client, signed in, CSRF) like people clicking: list pages,
  Retry / Kill (bulk, `key[]`), Add to queue, Delete (one job per POST, so the actions log says exactly which jid was
  deleted), delete a queued job (`key_val`).
- Redis is restarted `--restarts` times in the middle (SIGTERM, start again on the same port and directory).
- At the end (feeder and UI stopped, queue drained, Sidekiq stopped) every jid must be in exactly one place:
  queued, in retry/schedule/dead, executed (exactly once), or deleted by the UI. The tally is printed; exit 1 on
  any jid lost, duplicated or executed twice, or any 5xx other than 503 from the UI.

Needs ruby + ruby-sidekiq: skipped (exit 0 with a message) when missing, unless env CI is set (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402

SET_PAGES = {"retry": "retries", "schedule": "scheduled", "dead": "morgue"}
POOL = "chaos"


def job(jid: str, now: float) -> str:
    return json.dumps({"class": "PlainWorker", "args": [jid[:6]], "retry": True, "queue": "default", "jid": jid,
                       "created_at": now, "enqueued_at": now})


@dataclass
class Tally:
    created: set = field(default_factory=set)
    deleted: dict = field(default_factory=dict)  # jid -> where from, when the actions log said count=1 for it
    deleted_maybe: set = field(default_factory=set)  # a delete POST that failed (restart) — may or may not have run
    ui: Counter = field(default_factory=Counter)  # (action, status) -> count
    moved: Counter = field(default_factory=Counter)  # action -> jobs the actions log reported moved
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ActionLog(logging.Handler):
    """Reads kiqboard.actions records. The test client runs the request in the calling thread, so the record a POST
    produced is this thread's `last` — that is how a delete is tied to its jid."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "kiqboard_action", None)
        if action:
            self.local.last = action
            with self.tally.lock:
                self.tally.moved[action["action"]] += int(action["count"])

    def take(self) -> dict | None:
        last, self.local.last = getattr(self.local, "last", None), None
        return last


def redis_retry(fn, attempts: int = 200):
    """Run a Redis write until it is acknowledged (idempotent writes only: ZADD/LPUSH of a fixed member are not
    both — LPUSH is only retried when the error came before the write could land: connection refused)."""
    for _ in range(attempts):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
            time.sleep(0.05)
    raise RuntimeError("Redis never came back")


def seed(client: redis.Redis, tally: Tally, n: int) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.sadd("queues", "default")
    for i in range(n):
        jid = uuid.uuid4().hex[:24]
        tally.created.add(jid)
        where = i % 10
        if where < 4:  # retry: due now or within 4 s (the poller races the UI)
            pipe.zadd("retry", {job(jid, now): now + random.uniform(-2, 4)})
        elif where < 6:
            pipe.zadd("schedule", {job(jid, now): now + random.uniform(0, 8)})
        elif where < 8:
            pipe.zadd("dead", {job(jid, now): now - random.uniform(0, 1000)})
        else:
            pipe.lpush("queue:default", job(jid, now))
    pipe.execute()


def feeder(client: redis.Redis, tally: Tally, stop: threading.Event, writes_ok: threading.Event,
           per_tick: int = 5) -> None:
    """Stands in for the apps' Sidekiq clients. Paused around restarts: retrying a ZADD whose reply was lost could
    re-add a job the poller had moved meanwhile — a duplicate made by this harness, not by kiqboard."""
    while not stop.is_set():
        writes_ok.wait(5)
        now = time.time()
        for _ in range(per_tick):
            jid = uuid.uuid4().hex[:24]
            name = random.choice(["retry", "schedule", "dead"])
            payload = job(jid, now)
            score = now + random.uniform(0, 3) if name != "dead" else now
            redis_retry(lambda: client.zadd(name, {payload: score}))  # ZADD of one member: idempotent
            with tally.lock:
                tally.created.add(jid)
        stop.wait(0.05)


def ui_worker(app, tally: Tally, log: ActionLog, stop: threading.Event, seed_: int) -> None:
    from tests.auth_support import csrf_token
    from tests.faults_support import signed_in_client

    rng = random.Random(seed_)
    client = signed_in_client(app, "chaos-monkey")
    token = csrf_token(client)
    pool = app.extensions["kiqboard"]["pools"][POOL]

    def note(action: str, status: int) -> None:
        with tally.lock:
            tally.ui[(action, status)] += 1

    def delete(path: str, data: dict, jid: str, where: str) -> None:
        log.take()
        status = client.post(path, data={**data, "authenticity_token": token}).status_code
        record = log.take()
        note("delete", status)
        with tally.lock:
            if record is not None and int(record["count"]) == 1:
                tally.deleted[jid] = where
            elif status != 302:  # failed in a restart: the script may or may not have run
                tally.deleted_maybe.add(jid)

    while not stop.is_set():
        set_name = rng.choice(["retry", "retry", "schedule", "dead"])
        page = SET_PAGES[set_name]
        note(f"GET {page}", client.get(f"/{POOL}/{page}?count=50").status_code)
        try:
            entries = pool.reader.sorted_set(set_name, count=50).entries.items
        except redis.RedisError:
            stop.wait(0.05)
            continue
        if entries:
            chosen = rng.sample(entries, min(len(entries), rng.randint(1, 8)))
            action = rng.choice({"retry": ["retry", "kill", "delete"], "schedule": ["add_to_queue", "delete"],
                                 "dead": ["retry", "retry", "delete"]}[set_name])
            if action == "delete":  # one job per POST: the log's count says whether this jid went
                entry = chosen[0]
                delete(f"/{POOL}/{page}/{entry.key}", {"delete": "Delete"}, entry.job.jid, set_name)
            else:
                status = client.post(f"/{POOL}/{page}", data={"key[]": [e.key for e in chosen], action: "1",
                                                              "authenticity_token": token}).status_code
                note(action, status)
        if rng.random() < 0.25:  # delete a job waiting in the queue (racing the workers' BRPOP)
            try:
                raw = pool.redis.lindex("queue:default", rng.randint(0, 20))
            except redis.RedisError:
                raw = None
            if raw:
                delete(f"/{POOL}/queues/default/delete", {"key_val": raw.decode()}, json.loads(raw)["jid"], "queue")
        stop.wait(rng.uniform(0, 0.03))


def locate(client: redis.Redis, executed_key: str) -> dict[str, list[str]]:
    """jid -> every place it is found now (queue, sets, executed (once per execution))."""
    places: dict[str, list[str]] = {}

    def add(member: bytes, where: str) -> None:
        try:
            jid = json.loads(member)["jid"]
        except (ValueError, KeyError, TypeError):
            jid = f"?{member[:40]!r}"
        places.setdefault(jid, []).append(where)

    for queue in client.smembers("queues"):
        for member in client.lrange(b"queue:" + queue, 0, -1):
            add(member, "queued")
    for name in ("retry", "schedule", "dead"):
        for member in client.zrange(name, 0, -1):
            add(member, name)
    for jid in client.lrange(executed_key, 0, -1):
        places.setdefault(jid.decode(), []).append("executed")
    return places


def run(seconds: float = 60, restarts: int = 3, jobs: int = 3000, ui_threads: int = 4, sidekiqs: int = 2,
        verbose: bool = True) -> dict:
    import app as app_module
    from config import load_settings
    from sidekiq_support import EXECUTED, SidekiqProcess, require_ruby
    from tests.conftest import RedisServer
    from tests.faults_support import GITHUB_ENV

    require_ruby()
    say = print if verbose else (lambda *a, **k: None)
    server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")).start()
    tally = Tally()
    handler = ActionLog(tally)
    actions_logger = logging.getLogger("kiqboard.actions")
    actions_logger.addHandler(handler)
    actions_logger.setLevel(logging.INFO)
    propagate, actions_logger.propagate = actions_logger.propagate, False  # thousands of lines: keep stdout readable
    processes = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        client = server.client()
        seed(client, tally, jobs)
        env = {"REDIS_1": server.url, "REDIS_1_NAME": POOL, "LOG_LEVEL": "ERROR", **GITHUB_ENV}
        app = app_module.create_app(load_settings(env))
        app.config.update(TESTING=True)
        app.logger.setLevel(logging.CRITICAL)
        pool = app.extensions["kiqboard"]["pools"][POOL]
        pool.breaker.open_seconds = 0.5  # come back quickly after each restart
        for i in range(sidekiqs):
            processes.append(SidekiqProcess(server.url, queues=["default"], concurrency=5, poll_interval=0.5,
                                            tag=f"chaos-{i}").start())
        say(f"seeded {jobs} jobs; {sidekiqs} sidekiq processes up; UI x{ui_threads}; {seconds:g} s; "
            f"{restarts} Redis restarts")
        writes_ok = threading.Event()
        writes_ok.set()
        threads = [threading.Thread(target=feeder, args=(server.client(), tally, stop, writes_ok), daemon=True)]
        threads += [threading.Thread(target=ui_worker, args=(app, tally, handler, stop, i), daemon=True)
                    for i in range(ui_threads)]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        restart_at = [began + seconds * (i + 1) / (restarts + 1) for i in range(restarts)]
        while time.monotonic() - began < seconds:
            if restart_at and time.monotonic() >= restart_at[0]:
                restart_at.pop(0)
                writes_ok.clear()
                time.sleep(0.1)  # let a feeder write in flight land
                server.stop()  # SIGTERM: redis-server exits; the AOF (fsync always) has every acknowledged write
                time.sleep(0.3)
                server.start()
                writes_ok.set()
                tally.restarts += 1
                say(f"  restarted redis-server at {time.monotonic() - began:.1f} s")
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(30)
        # Drain: let the workers empty the queue (scheduled/retry entries left in their sets are fine).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.llen("queue:default") == 0 and all(p.busy() == 0 for p in processes):
                    break
            except redis.RedisError:
                pass
            time.sleep(0.2)
        for process in processes:
            process.stop(timeout=15)
        processes = []
        places = locate(client, EXECUTED)
    finally:
        stop.set()
        for process in processes:
            process.stop(timeout=15)
        actions_logger.removeHandler(handler)
        actions_logger.propagate = propagate

    result = Counter()
    problems: list[str] = []
    for jid in tally.created:
        where = places.get(jid, [])
        deleted = jid in tally.deleted
        if not where and deleted:
            result["deleted by the UI"] += 1
        elif not where and jid in tally.deleted_maybe:
            result["deleted by a UI request whose reply was lost in a restart"] += 1
        elif not where:
            result["LOST"] += 1
            problems.append(f"{jid}: nowhere")
        elif len(where) > 1 or deleted:
            result["DUPLICATED"] += 1
            problems.append(f"{jid}: {where}{' and deleted from ' + tally.deleted[jid] if deleted else ''}")
        else:
            result[where[0]] += 1
    strangers = [j for j in places if j not in tally.created]
    if strangers:
        problems.append(f"{len(strangers)} unknown jids, e.g. {strangers[:3]}")
    errors = {k: v for k, v in tally.ui.items() if k[1] >= 500 and k[1] != 503}
    if errors:
        problems.append(f"UI errors: {errors}")
    summary = {
        "jobs": len(tally.created), "restarts": tally.restarts, "tally": dict(result),
        "ui_requests": sum(tally.ui.values()),
        "ui_statuses": dict(sum((Counter({status: n}) for (_, status), n in tally.ui.items()), Counter())),
        "moved_by_ui": dict(tally.moved), "problems": problems,
    }
    server.cleanup()
    say(json.dumps({k: v for k, v in summary.items() if k != "problems"}, indent=2, default=str))
    for problem in problems[:20]:
        say("PROBLEM:", problem)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--ui-threads", type=int, default=4)
    parser.add_argument("--sidekiqs", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from sidekiq_support import ruby_available

    if not ruby_available():
        print("ruby / ruby-sidekiq not installed; .ci/run installs them")
        return 1 if os.environ.get("CI") else 0
    summary = run(args.seconds, args.restarts, args.jobs, args.ui_threads, args.sidekiqs)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
