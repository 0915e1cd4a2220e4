"""Interop: kiqboard's SidekiqReader against REAL Sidekiq 6.4.1 (Debian's ruby-sidekiq).

One real redis-server holds two Sidekiq "apps" at once: one without a namespace and one under the redis-namespace
`myapp`. Each is seeded by tests/ruby/seed.rb (Sidekiq's client, ActiveJob's adapter, ActionMailer, Sidekiq's own
JobRetry), has a real `sidekiq` process that fails jobs into the retry and dead sets and then stays busy with
sleeping jobs, and is described by tests/ruby/dump.rb (Sidekiq's own API). The reader must agree with every number
and every jid, for both apps, each read ignoring the other's keys.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import redis

from conftest import RedisServer
from sidekiq_support import (
    SidekiqProcess,
    dump,
    nskey,
    push_jobs,
    require_ruby,
    seed,
    wait_until,
)

pytestmark = pytest.mark.ruby

NAMESPACES = [None, "myapp"]
SLEEPERS = 2          # running jobs kept busy per process while we read
CONCURRENCY = {None: 3, "myapp": 4}
LATENCY_TOLERANCE = 1.5  # seconds, after correcting for the time between Sidekiq's reading and ours


class World:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url
        self.seeded: dict[str | None, dict] = {}
        self.dumps: dict[str | None, dict] = {}
        self.processes: dict[str | None, SidekiqProcess] = {}
        self.sleepers: dict[str | None, list[str]] = {}


@pytest.fixture(scope="module")
def world():
    require_ruby()
    server = RedisServer().start()
    w = World(server)
    admin = server.client(decode_responses=True)
    try:
        for ns in NAMESPACES:
            w.seeded[ns] = seed(w.url, ns, "full")
        for ns in NAMESPACES:
            w.processes[ns] = SidekiqProcess(
                w.url, ns, queues=["failing", "slow"], concurrency=CONCURRENCY[ns], tag=f"kiq-{ns or 'plain'}",
            ).start()
        # Real workers fail jobs into retry (FailingWorker, ActiveJob FailingJob) and dead (DeadWorker, retry: 0).
        for ns in NAMESPACES:
            failing = seed(w.url, ns, "failing")
            w.seeded[ns]["jids"].update(failing["jids"])
        for ns in NAMESPACES:
            expected = set(w.seeded[ns]["jids"]["failing_retry"])
            wait_until(lambda: expected <= _set_jids(admin, ns, "retry"), 20, f"real failures in retry ({ns})")
            wait_until(lambda: admin.get(nskey(ns, "stat:failed")) == "4", 20, f"stat:failed flushed ({ns})")
        # Keep each process busy with sleeping jobs while we read.
        now = time.time()
        for ns in NAMESPACES:
            jids = [uuid.uuid4().hex[:24] for _ in range(SLEEPERS)]
            w.sleepers[ns] = jids
            push_jobs(admin, "slow", [
                {"class": "SleepWorker", "args": [600, i], "jid": jid, "queue": "slow", "retry": False,
                 "created_at": now, "enqueued_at": now}
                for i, jid in enumerate(jids)
            ], ns)
        for ns in NAMESPACES:
            w.processes[ns].wait_busy(SLEEPERS, timeout=15)
            wait_until(lambda: len(admin.hgetall(nskey(ns, f"{w.processes[ns].identity}:workers"))) == SLEEPERS,
                       10, "the workers hash")
        for ns in NAMESPACES:
            w.dumps[ns] = dump(w.url, ns)
        yield w
    finally:
        for process in w.processes.values():
            process.stop(timeout=1)
        admin.close()
        server.cleanup()


def _set_jids(client: redis.Redis, ns: str | None, name: str) -> set[str]:
    return {json.loads(m)["jid"] for m in client.zrange(nskey(ns, name), 0, -1)}


@pytest.fixture(params=[(None, False), (None, True), ("myapp", False), ("myapp", True)],
                ids=["plain-bytes", "plain-str", "namespaced-bytes", "namespaced-str"])
def case(request, world):
    ns, decode = request.param
    from sidekiq_reader import SidekiqReader

    client = world.server.client(decode_responses=decode)
    reader = SidekiqReader(client, namespace=ns) if ns else SidekiqReader(client)
    yield ns, reader, world.dumps[ns], world
    client.close()


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _close(a: float | None, b: float | None, tol: float = 1e-5) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= tol


def _latency_expected(ruby_latency: float, ruby_now: float, read_at: float) -> float:
    """Sidekiq measured latency at ruby_now; the same job is (read_at - ruby_now) seconds older when we read."""
    return ruby_latency + (read_at - ruby_now) if ruby_latency else 0.0


# ------------------------------------------------------------------------------------------------ sanity of the seed


def test_the_seed_is_what_we_think(case):
    ns, _, d, world = case
    jids = world.seeded[ns]["jids"]
    assert d["namespace"] == (ns or "")
    assert {e["jid"] for e in d["sets"]["retry"]} == set(jids["retry"]) | set(jids["failing_retry"])
    assert {e["jid"] for e in d["sets"]["dead"]} == set(jids["dead"]) | set(jids["failing_dead"])
    assert {e["jid"] for e in d["sets"]["schedule"]} == set(jids["schedule"])
    assert d["stats"]["workers_size"] == SLEEPERS
    assert d["stats"]["processes_size"] == 1
    assert d["stats"]["failed"] == 4 and d["stats"]["processed"] == 4
    assert {w["jid"] for w in d["workers"]} == set(world.sleepers[ns])
    # the other app's data is really there in the same Redis database
    other = world.dumps["myapp" if ns is None else None]
    assert not ({e["jid"] for e in d["sets"]["retry"]} & {e["jid"] for e in other["sets"]["retry"]})


# ------------------------------------------------------------------------------------------------ stats


def test_stats_agree_with_sidekiq_stats(case):
    ns, reader, d, _ = case
    read_at = time.time()
    stats = reader.stats()
    s = d["stats"]
    got = {
        "processed": stats.processed, "failed": stats.failed, "scheduled_size": stats.scheduled,
        "retry_size": stats.retries, "dead_size": stats.dead, "processes_size": stats.processes,
        "workers_size": stats.busy, "enqueued": stats.enqueued,
    }
    expected = {k: s[k] for k in got}
    assert got == expected
    assert stats.default_latency == pytest.approx(
        _latency_expected(s["default_queue_latency"], d["now"], read_at), abs=LATENCY_TOLERANCE)
    assert s["default_queue_latency"] > 0  # the seed leaves jobs in queue:default


def test_stats_json_and_queue_sizes(case):
    ns, reader, d, _ = case
    read_at = time.time()
    body = reader.stats_json()
    s = d["stats"]
    sk = body["sidekiq"]
    assert {k: sk[k] for k in ("processed", "failed", "busy", "processes", "enqueued", "scheduled", "retries", "dead")} == {
        "processed": s["processed"], "failed": s["failed"], "busy": s["workers_size"],
        "processes": s["processes_size"], "enqueued": s["enqueued"], "scheduled": s["scheduled_size"],
        "retries": s["retry_size"], "dead": s["dead_size"],
    }
    assert sk["default_latency"] == pytest.approx(
        _latency_expected(s["default_queue_latency"], d["now"], read_at), abs=LATENCY_TOLERANCE)
    sizes = reader.queue_sizes()
    assert dict(sizes) == d["stats_queues"]
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)


def test_history_agrees_with_stats_history(case):
    ns, reader, d, _ = case
    history = reader.dashboard(days=7).history
    want = d["history"]
    assert [day.isoformat() for day in history.dates] == list(want["processed"].keys())
    assert history.processed == list(want["processed"].values())
    assert history.failed == list(want["failed"].values())
    assert sum(history.processed) == d["stats"]["processed"] == 4
    assert sum(history.failed) == 4


# ------------------------------------------------------------------------------------------------ queues


def test_queues_agree_with_queue_all(case):
    ns, reader, d, _ = case
    read_at = time.time()
    data = reader.queues()
    got = [(q.name, q.size, q.paused) for q in data.queues]
    assert got == [(q["name"], q["size"], q["paused"]) for q in d["queues"]]  # Queue.all is sorted by name too
    for summary, q in zip(data.queues, d["queues"]):
        assert summary.latency == pytest.approx(
            _latency_expected(q["latency"], d["now"], read_at), abs=LATENCY_TOLERANCE), summary.name
    assert {q["name"] for q in d["queues"]} >= {"default", "critical", "low", "bulk", "failing", "slow"}


def _assert_job_matches(job, want: dict, where: str, mailer_shapes: list) -> None:
    assert job.valid, where
    assert job.jid == want["jid"], where
    assert job.klass == want["klass"], where
    assert job.display_class == want["display_class"], where
    assert job.queue == want["queue"], where
    assert job.tags == want["tags"], where
    if job.display_args != want["display_args_deserialized"]:
        # ActionMailer::MailDeliveryJob: 6.x/7.x show args, 8.x shows [params, args]; accept either, note which
        assert job.display_args == want["display_args_v8"], (where, job.display_args, want)
        mailer_shapes.append("v8")
    assert job.retry_count == want["retry_count"], where
    assert job.error_class == want["error_class"], where
    assert job.error_message == want["error_message"], where
    for name in ("created_at", "enqueued_at", "failed_at", "retried_at"):
        assert _close(_ts(getattr(job, name)), want[name]), (where, name, getattr(job, name), want[name])
    if "error_backtrace" in want:
        assert job.backtrace == want["error_backtrace"], where
    else:
        assert job.backtrace is None, where
    raw = job.raw_bytes.decode() if isinstance(job.raw_bytes, bytes) else job.raw_bytes
    assert raw == want["value"], where


def test_queue_pages_agree_job_by_job(case):
    ns, reader, d, _ = case
    shapes: list = []
    for q in d["queues"]:
        data = reader.queue(q["name"], page=1, count=1000)
        assert data.jobs.total == q["size"]
        assert [qj.job.jid for qj in data.jobs.items] == [j["jid"] for j in q["jobs"]], q["name"]  # newest first
        assert [qj.index for qj in data.jobs.items] == list(range(q["size"]))
        for qj, want in zip(data.jobs.items, q["jobs"]):
            _assert_job_matches(qj.job, want, f"queue {q['name']} {want['jid']}", shapes)
        asc = reader.queue(q["name"], page=1, count=1000, ascending=True)
        assert [qj.job.jid for qj in asc.jobs.items] == [j["jid"] for j in reversed(q["jobs"])], q["name"]


def test_display_class_and_args_of_wrapped_jobs(case):
    """Spot checks that the comparison above covers what it should (ActiveJob, GlobalID, mailers, overrides)."""
    ns, reader, d, _ = case
    jobs = {j["jid"]: j for q in d["queues"] for j in q["jobs"]}
    classes = {j["display_class"] for j in jobs.values()}
    assert {"GidJob", "Shown::AsThis", "Some::Unknown::Job", "PlainWorker"} <= classes
    if any(j["display_class"].endswith("#welcome") for j in jobs.values()):
        assert {"TestMailer#welcome", "ModernMailer#welcome"} <= classes
    gid = [j for j in jobs.values() if j["display_class"] == "GidJob" and j["queue"] == "default"][0]
    assert gid["display_args_deserialized"] == ["gid://kiqboard-test/User/42", {"note": "hello", "sym": 1}]
    data = reader.queue("default", count=1000)
    got = {qj.job.jid: qj.job for qj in data.jobs.items}
    assert got[gid["jid"]].display_args == gid["display_args_deserialized"]


# ------------------------------------------------------------------------------------------------ sorted sets


@pytest.mark.parametrize("name", ["retry", "schedule", "dead"])
def test_sorted_sets_agree_entry_by_entry(case, name):
    ns, reader, d, _ = case
    want = d["sets"][name]
    data = reader.sorted_set(name, page=1, count=1000)
    assert data.entries.total == len(want)
    # Sidekiq's JobSet#each walks from the highest score down; retry/schedule pages are ascending, dead descending
    ordered = sorted(want, key=lambda e: e["score"], reverse=(name == "dead"))
    assert [e.job.jid for e in data.entries.items] == [e["jid"] for e in ordered]
    shapes: list = []
    for entry, w in zip(data.entries.items, ordered):
        assert entry.set_name == name
        assert entry.score == w["score"], (entry.job.jid, entry.score, w["score"])
        assert _close(entry.at.timestamp(), w["at"]), entry.job.jid
        _assert_job_matches(entry.job, w, f"{name} {w['jid']}", shapes)
        found = reader.find_entry(name, entry.key)
        assert found is not None and found.job.jid == w["jid"], entry.key
        one = reader.entry(name, entry.key)
        assert one.entry is not None and one.entry.job.raw_bytes == entry.job.raw_bytes
    # small pages cover the same entries, in the same order
    paged = []
    for page in range(1, -(-len(want) // 3) + 1):
        paged += [e.job.jid for e in reader.sorted_set(name, page=page, count=3).entries.items]
    assert paged == [e["jid"] for e in ordered]


def test_retry_and_dead_entries_carry_sidekiqs_error_fields(case):
    ns, reader, d, world = case
    retry = {e.job.jid: e.job for e in reader.sorted_set("retry", count=1000).entries.items}
    real = world.seeded[ns]["jids"]["failing_retry"]
    for jid in real:  # failed by the real sidekiq process
        assert retry[jid].error_class in ("ArgumentError", "RuntimeError")
        assert retry[jid].retry_count == 0
    backtraced = [j for j in retry.values() if j.klass == "FailingWorker"]  # backtrace: true
    assert len(backtraced) == 4 and all(j.backtrace for j in backtraced)
    for j in backtraced:  # the real process raised in worker_app.rb; seed.rb's JobRetry block raised in seed.rb
        assert any(("worker_app.rb" if j.jid in real else "seed.rb") in line for line in j.backtrace), j.backtrace
    thrice = [j for j in retry.values() if j.display_args == ["thrice"]][0]
    assert thrice.retry_count == 2 and thrice.retried_at is not None
    dead = {e.job.jid: e.job for e in reader.sorted_set("dead", count=1000).entries.items}
    assert any(j.error_message == "DeadWorker dies ünïcödé" for j in dead.values())


def test_substring_filter_finds_sidekiq_entries(case):
    ns, reader, d, _ = case
    want = [e["jid"] for e in d["sets"]["retry"] if "thrice" in e["value"]]
    data = reader.sorted_set("retry", substr="thrice")
    assert [e.job.jid for e in data.entries.items] == want


# ------------------------------------------------------------------------------------------------ processes and work


def test_processes_agree_with_process_set(case):
    ns, reader, d, world = case
    busy = reader.busy(page=1, count=100)
    want = {p["identity"]: p for p in d["processes"]}
    got = {p.identity: p for p in busy.processes}
    assert set(got) == set(want) == {world.processes[ns].identity}
    for identity, p in got.items():
        w = want[identity]
        assert (p.busy, p.quiet, p.concurrency, p.alive) == (w["busy"], w["quiet"], w["concurrency"], True)
        assert (p.hostname, p.pid, p.tag, p.labels, p.queues) == (w["hostname"], w["pid"], w["tag"], w["labels"], w["queues"])
        assert _close(_ts(p.started_at), w["started_at"])
        assert p.beat is not None and abs(p.beat.timestamp() - w["beat"]) <= 6  # a heartbeat may happen in between
        assert p.stopping is False
    assert busy.stats.busy == d["stats"]["workers_size"]
    assert busy.stats.processes == d["stats"]["processes_size"]
    assert sum(p.concurrency for p in busy.processes) == CONCURRENCY[ns]


def test_running_jobs_agree_with_workers(case):
    ns, reader, d, world = case
    busy = reader.busy(page=1, count=100)
    got = sorted((w.identity, w.tid, w.job.jid, w.queue, int(w.run_at.timestamp()), w.job.display_class)
                 for w in busy.work.items)
    want = sorted((w["identity"], w["tid"], w["jid"], w["queue"], w["run_at"], w["display_class"]) for w in d["workers"])
    assert got == want
    assert busy.work.total == len(want) == SLEEPERS
    assert {w.job.jid for w in busy.work.items} == set(world.sleepers[ns])
    one = reader.busy(page=2, count=1)
    assert one.work.total == SLEEPERS and len(one.work.items) == 1


def test_reader_works_as_a_read_only_redis_user(case):
    """Sidekiq's own ProcessSet SREMs on view; the reader must not write at all. Redis 7 checks the commands inside
    Lua scripts against the user's ACL, so a user without @write proves it (NOPERM otherwise)."""
    ns, _, d, world = case
    from sidekiq_reader import SidekiqReader

    admin = world.server.client()
    admin.execute_command("ACL", "SETUSER", "kiq-readonly", "on", ">pw", "~*", "&*", "+@all", "-@write",
                          "-@dangerous", "+info", "+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script|load")
    client = redis.Redis(host="127.0.0.1", port=world.server.port, username="kiq-readonly", password="pw")
    try:
        reader = SidekiqReader(client, namespace=ns) if ns else SidekiqReader(client)
        assert reader.stats().retries == d["stats"]["retry_size"]
        reader.stats_json(); reader.queue_sizes(); reader.queues(); reader.dashboard(days=30)
        busy = reader.busy()
        assert {p.identity for p in busy.processes} == {world.processes[ns].identity}
        for q in d["queues"]:
            reader.queue(q["name"])
        for name in ("retry", "schedule", "dead"):
            entries = reader.sorted_set(name).entries.items
            reader.sorted_set(name, substr="a")
            if entries:
                assert reader.entry(name, entries[0].key).entry is not None
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(nskey(ns, "kiq-probe"), "1")  # the user really cannot write
    finally:
        client.close()
        admin.close()
