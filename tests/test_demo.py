"""Demo mode: seeded Sidekiq-shaped data per pool version, and the simulator that keeps it moving."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import time
import zlib

import fakeredis
import pytest

import demo
from config import POOL_NAME_RE

NOW = 1_760_000_000.25  # fixed clock for deterministic seeds (a Thursday, 2025-10-09 UTC)


def seeded(name: str, now: float = NOW, **kwargs) -> tuple[demo.DemoProfile, fakeredis.FakeRedis]:
    profile = demo.DEMO_PROFILES[name]
    client = demo.demo_client(profile, **kwargs)
    demo.seed(client, profile, now=now)
    return profile, client


@pytest.fixture(scope="module")
def pools() -> dict[str, tuple[demo.DemoProfile, fakeredis.FakeRedis]]:
    # Seeded at the real time: TTLs (EXPIRE 60) count down on fakeredis's real clock.
    return {name: seeded(name, now=time.time()) for name in demo.DEMO_PROFILES}


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def members(client, key: str) -> list[dict]:
    kind = text(client.type(key))
    if kind == "list":
        raw = client.lrange(key, 0, -1)
    elif kind == "zset":
        raw = client.zrange(key, 0, -1)
    else:
        raise AssertionError(f"{key} is a {kind}")
    return [json.loads(m) for m in raw]


def processes(profile, client) -> list[str]:
    return sorted(text(m) for m in client.smembers(profile.key("processes")))


def work_of(profile, client, identity: str) -> dict[str, dict]:
    raw = client.hgetall(profile.key(identity + profile.work_suffix))
    return {text(tid): json.loads(entry) for tid, entry in raw.items()}


def all_payloads(profile, client):
    """(where, raw member) for every job payload stored anywhere in the pool."""
    k = profile.key
    for queue in client.smembers(k("queues")):
        for raw in client.lrange(k(f"queue:{text(queue)}"), 0, -1):
            yield f"queue:{text(queue)}", raw
    for name in ("retry", "schedule", "dead"):
        for raw in client.zrange(k(name), 0, -1):
            yield name, raw
    for identity in processes(profile, client):
        for entry in work_of(profile, client, identity).values():
            yield "work", entry["payload"]


# ------------------------------------------------------------------------------------------------------------------
# settings and clients


def test_demo_pool_settings_are_three_valid_pools_with_their_namespace():
    settings = demo.demo_pool_settings()
    assert [s.name for s in settings] == ["storefront", "billing", "search-indexer"]
    assert [s.number for s in settings] == [1, 2, 3]
    assert all(POOL_NAME_RE.fullmatch(s.name) for s in settings)
    assert {s.name: s.namespace for s in settings} == {"storefront": None, "billing": "billing", "search-indexer": None}
    assert all(s.url.startswith("redis://") for s in settings)


def test_each_demo_client_has_its_own_server_and_runs_lua():
    a, b = (demo.demo_client(s) for s in demo.demo_pool_settings()[:2])
    a.set("x", 1)
    assert b.get("x") is None
    assert a.eval("return redis.call('get', KEYS[1])", 1, "x") == b"1"


def test_build_demo_pools_returns_settings_with_seeded_clients():
    built = demo.build_demo_pools(now=NOW)
    assert [s.name for s, _ in built] == ["storefront", "billing", "search-indexer"]
    for settings, client in built:
        assert client.zcard(demo.profile_for(settings).key("retry")) >= 200


def test_seed_is_deterministic_for_a_given_clock():
    _, first = seeded("storefront")
    _, second = seeded("storefront")
    assert sorted(first.keys("*")) == sorted(second.keys("*"))
    assert first.lrange("queue:default", 0, -1) == second.lrange("queue:default", 0, -1)
    assert first.zrange("retry", 0, -1, withscores=True) == second.zrange("retry", 0, -1, withscores=True)


# ------------------------------------------------------------------------------------------------------------------
# seeding: every kind of data


@pytest.mark.parametrize("name", list(demo.DEMO_PROFILES))
def test_seed_writes_every_kind_of_sidekiq_data(pools, name):
    profile, client = pools[name]
    k = profile.key
    now = time.time()

    # queues: registered in `queues`, lists of jobs, latency from the oldest (tail) job's enqueued_at
    assert text(client.type(k("queues"))) == "set"
    assert {text(q) for q in client.smembers(k("queues"))} == set(profile.queues)
    for queue, (latency, size) in profile.queues.items():
        assert text(client.type(k(f"queue:{queue}"))) == "list"
        assert client.llen(k(f"queue:{queue}")) == size
        oldest = json.loads(client.lindex(k(f"queue:{queue}"), -1))
        newest = json.loads(client.lindex(k(f"queue:{queue}"), 0))
        unit = 1000 if profile.millis else 1
        assert now - oldest["enqueued_at"] / unit == pytest.approx(latency, abs=30)
        assert newest["enqueued_at"] >= oldest["enqueued_at"]
        assert all(job["queue"] == queue for job in members(client, k(f"queue:{queue}")))

    # retries: hundreds, each with the error fields JobRetry writes, scores in the future (the next attempt)
    retries = client.zrange(k("retry"), 0, -1, withscores=True)
    assert len(retries) == profile.retries >= 200
    for raw, score in retries:
        job = json.loads(raw)
        assert job["error_class"] and job["error_message"]
        assert isinstance(job["retry_count"], int) and 0 <= job["retry_count"] < demo._max_retries(job)
        assert "failed_at" in job
        assert ("retried_at" in job) == (job["retry_count"] > 0)
        assert score > NOW - 60
    with_backtrace = [json.loads(raw) for raw, _ in retries if "error_backtrace" in json.loads(raw)]
    assert len(with_backtrace) > len(retries) // 3

    # scheduled: future run-at scores, no `at`, no enqueued_at ("Not yet enqueued")
    scheduled = client.zrange(k("schedule"), 0, -1, withscores=True)
    assert len(scheduled) == profile.scheduled
    for raw, score in scheduled:
        job = json.loads(raw)
        assert "at" not in job and "enqueued_at" not in job
        assert score > now - 120

    # dead: retries exhausted within the last 180 days
    dead = client.zrange(k("dead"), 0, -1, withscores=True)
    assert len(dead) == profile.dead
    for raw, score in dead:
        job = json.loads(raw)
        assert job["retry_count"] == demo._max_retries(job)
        assert now - 180 * 86400 < score <= now

    # processes: set + identity hash with the version's fields, EXPIRE 60, work hash with running jobs
    identities = processes(profile, client)
    assert 3 <= len(identities) <= 6
    total_busy = 0
    for identity in identities:
        assert re.fullmatch(r"[a-z]+\.\d+:\d+:[0-9a-f]{12}", identity)
        key = k(identity)
        assert text(client.type(key)) == "hash"
        assert 0 < client.ttl(key) <= 60
        fields = {text(f): text(v) for f, v in client.hgetall(key).items()}
        assert {"info", "busy", "beat", "quiet", "rss", "rtt_us"} <= set(fields)
        info = json.loads(fields["info"])
        assert info["identity"] == identity and info["hostname"] == identity.split(":")[0]
        assert info["pid"] == int(identity.split(":")[1]) and info["tag"] == profile.tag
        assert fields["quiet"] in ("true", "false")
        assert now - 120 < float(fields["beat"]) <= now + 1
        assert now - 3 * 86400 < info["started_at"] < now
        work = work_of(profile, client, identity)
        assert int(fields["busy"]) == len(work)
        if work:
            assert 0 < client.ttl(k(identity + profile.work_suffix)) <= 60
        for entry in work.values():
            assert list(entry) == ["queue", "payload", "run_at"]
            assert isinstance(entry["payload"], str) and isinstance(entry["run_at"], int)
            assert json.loads(entry["payload"])["queue"] == entry["queue"]
        total_busy += len(work)
    assert total_busy >= 5
    if name == "storefront":
        assert {text(q) for q in client.smembers("paused")} == {"exports"}
        quiet = [i for i in identities if client.hget(i, "quiet") == b"true"]
        assert len(quiet) == 1

    # counters: lifetime totals >= the 180-day history
    history = [int(client.get(k(f"stat:processed:{d}")) or 0) for d in history_dates(now)]
    assert int(client.get(k("stat:processed"))) >= sum(history) > 0
    assert int(client.get(k("stat:failed"))) > 0


def history_dates(now: float, days: int = 181) -> list[str]:
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in range(days)]


@pytest.mark.parametrize("name", list(demo.DEMO_PROFILES))
def test_history_covers_180_days_with_a_weekly_rhythm_and_sidekiq_ttls(name):
    profile, client = seeded(name)
    k = profile.key
    dates = history_dates(NOW)
    processed = [client.get(k(f"stat:processed:{d}")) for d in dates]
    failed = [client.get(k(f"stat:failed:{d}")) for d in dates]
    assert all(v is not None for v in processed + failed)  # today and the 180 days before it
    assert client.get(k(f"stat:processed:{history_dates(NOW, 182)[-1]}")) is None
    ttl = client.ttl(k(f"stat:processed:{dates[1]}"))
    assert 5 * 365 * 86400 - 3 * 86400 < ttl <= 5 * 365 * 86400
    by_weekday: dict[int, list[int]] = {}
    for day, value in zip(dates[1:], processed[1:]):
        by_weekday.setdefault(dt.date.fromisoformat(day).weekday(), []).append(int(value))
    weekdays = sum(sum(by_weekday[d]) / len(by_weekday[d]) for d in range(5)) / 5
    weekend = sum(sum(by_weekday[d]) / len(by_weekday[d]) for d in (5, 6)) / 2
    assert weekdays > 1.5 * weekend
    assert all(int(f) < int(p) for p, f in zip(processed[1:], failed[1:]))
    assert int(processed[0]) < max(int(v) for v in processed[1:])  # today is partial


# ------------------------------------------------------------------------------------------------------------------
# formats per Sidekiq version


def decode_backtrace(value: str, strict: bool) -> list[str]:
    if strict:
        assert "\n" not in value
        data = base64.b64decode(value, validate=True)
    else:
        lines = value.split("\n")
        assert value.endswith("\n") and all(len(line) == 60 for line in lines[:-2]) and 0 < len(lines[-2]) <= 60
        data = base64.b64decode(value.replace("\n", ""), validate=True)
    return json.loads(zlib.decompress(data))


def test_storefront_is_sidekiq_8_with_ms_timestamps_strict_backtraces_and_work_hash():
    profile, client = seeded("storefront")
    assert profile.version == "8.1.7"
    jobs = members(client, "queue:default") + members(client, "retry") + members(client, "dead")
    for job in jobs:
        for stamp in ("created_at", "enqueued_at", "failed_at", "retried_at"):
            if stamp in job:
                assert type(job[stamp]) is int and job[stamp] > 10**12
    retries = members(client, "retry")
    backtraces = [decode_backtrace(j["error_backtrace"], strict=True) for j in retries if "error_backtrace" in j]
    assert backtraces and all(len(lines) <= 20 for lines in backtraces)
    assert any("sidekiq-8.1.7/lib/sidekiq/processor.rb" in line for line in backtraces[0])
    assert all(re.search(r":\d+:in '", line) for line in backtraces[0])  # Ruby 3.4 style
    identities = processes(profile, client)
    assert all(client.exists(f"{i}:work") and not client.exists(f"{i}:workers") for i in identities
               if client.hget(i, "busy") != b"0")
    embedded = []
    for identity in identities:
        fields = client.hgetall(identity)
        info = json.loads(fields[b"info"])
        assert int(fields[b"concurrency"]) == info["capsules"]["default"]["concurrency"]
        assert "concurrency" not in info and info["version"] == "8.1.7"
        assert set(info) == {"hostname", "started_at", "pid", "tag", "capsules", "queues", "weights", "labels",
                             "identity", "version", "embedded"}
        if info["embedded"]:
            embedded.append(identity)
    assert [i.split(":")[0] for i in embedded] == ["web.1"]
    wrapped = [j for j in jobs if j["class"] == "Sidekiq::ActiveJob::Wrapper"]
    assert wrapped and all(j["wrapped"] == j["args"][0]["job_class"] for j in wrapped)
    mail = [j for j in members(client, "queue:mailers") if j["wrapped"] == "ActionMailer::MailDeliveryJob"]
    assert mail
    arguments = mail[0]["args"][0]["arguments"]
    assert arguments[2] == "deliver_now" and "_aj_ruby2_keywords" in arguments[3]
    assert any(j["args"][0]["arguments"] and "_aj_globalid" in json.dumps(j["args"][0]["arguments"]) for j in wrapped)
    assert any(j.get("tags") for j in jobs) and any(j.get("bid") for j in jobs)


def test_billing_is_sidekiq_641_namespaced_with_floats_wrapped_backtraces_and_workers_hash():
    profile, client = seeded("billing")
    assert profile.version == "6.4.1" and profile.namespace == "billing"
    assert all(key.startswith(b"billing:") for key in client.keys("*"))
    jobs = members(client, "billing:queue:invoices") + members(client, "billing:retry")
    for job in jobs:
        for stamp in ("created_at", "enqueued_at", "failed_at", "retried_at"):
            if stamp in job:
                assert type(job[stamp]) is float
    retries = members(client, "billing:retry")
    backtraces = [decode_backtrace(j["error_backtrace"], strict=False) for j in retries if "error_backtrace" in j]
    assert backtraces and any("sidekiq-6.4.1/lib/sidekiq/processor.rb" in line for line in backtraces[0])
    assert all(re.search(r":\d+:in `", line) for line in backtraces[0])
    busy = 0
    for identity in processes(profile, client):
        fields = client.hgetall(f"billing:{identity}")
        assert b"concurrency" not in fields
        info = json.loads(fields[b"info"])
        assert set(info) == {"hostname", "started_at", "pid", "tag", "concurrency", "queues", "labels", "identity"}
        assert not client.exists(f"billing:{identity}:work")
        busy += client.hlen(f"billing:{identity}:workers")
    assert busy > 0
    wrapped = [j for j in jobs if j["class"] == "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"]
    assert wrapped and "scheduled_at" not in wrapped[0]["args"][0]  # Rails 6.1's serialize


def test_search_indexer_is_sidekiq_7_with_floats_strict_backtraces_and_weights():
    profile, client = seeded("search-indexer")
    assert profile.major == 7
    job = members(client, "queue:indexing")[0]
    assert type(job["created_at"]) is float and type(job["enqueued_at"]) is float
    retries = [j for j in members(client, "retry") if "error_backtrace" in j]
    assert decode_backtrace(retries[0]["error_backtrace"], strict=True)
    for identity in processes(profile, client):
        fields = client.hgetall(identity)
        info = json.loads(fields[b"info"])
        assert b"concurrency" not in fields and info["version"] == "7.3.10" and info["embedded"] is False
        assert isinstance(info["weights"], list) and isinstance(info["concurrency"], int)
        assert client.exists(f"{identity}:work") or fields[b"busy"] == b"0"


# ------------------------------------------------------------------------------------------------------------------
# the simulator


def fresh_simulator(*names: str, seed: int = 1):
    clients = {name: seeded(name, now=time.time()) for name in names or demo.DEMO_PROFILES}
    sim = demo.DemoSimulator([client for _, client in clients.values()], seed=seed)
    return sim, clients


def beats(profile, client) -> dict[str, float]:
    return {i: float(client.hget(profile.key(i), "beat")) for i in processes(profile, client)}


def test_a_tick_moves_counters_heartbeats_and_jobs():
    sim, clients = fresh_simulator()
    now = time.time() + 5
    before = {}
    for name, (profile, client) in clients.items():
        k = profile.key
        client.expire(k(processes(profile, client)[0]), 10)
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date().isoformat()
        before[name] = (int(client.get(k("stat:processed"))), int(client.get(k(f"stat:processed:{today}"))),
                        beats(profile, client), client.lrange(k("queue:default"), 0, -1))
    for i in range(5):
        sim.tick(now + i)
    for name, (profile, client) in clients.items():
        k = profile.key
        processed, today_count, old_beats, default_jobs = before[name]
        assert int(client.get(k("stat:processed"))) > processed
        assert int(client.get(k(f"stat:processed:{today}"))) - today_count == int(client.get(k("stat:processed"))) - processed
        assert client.ttl(k(f"stat:processed:{today}")) > 4 * 365 * 86400
        new_beats = beats(profile, client)
        assert 3 <= len(new_beats) <= 6
        assert all(beat == pytest.approx(now + 4) for beat in new_beats.values())
        assert all(50 < client.ttl(k(i)) <= 60 for i in new_beats)
        assert client.lrange(k("queue:default"), 0, -1) != default_jobs  # jobs flow
        total_busy = sum(int(client.hget(k(i), "busy")) for i in new_beats)
        assert total_busy == sum(len(work_of(profile, client, i)) for i in new_beats)


def test_many_ticks_keep_sizes_bounded_and_processes_alive():
    sim, clients = fresh_simulator()
    start = time.time()
    for i in range(80):
        sim.tick(start + i * 45)  # an hour of simulated time
    for profile, client in clients.values():
        k = profile.key
        for queue in profile.queues:
            assert client.llen(k(f"queue:{queue}")) <= max(profile.queue_cap // 2, profile.queues[queue][1] * 3 + 50)
        assert 0 < client.zcard(k("retry")) <= profile.retry_cap
        assert client.zcard(k("dead")) <= profile.dead_cap
        assert client.zcard(k("schedule")) <= profile.schedule_cap
        identities = processes(profile, client)
        assert len(identities) <= len(profile.dynos)
        assert len({i.split(":")[0] for i in identities}) == len(identities)
        assert client.dbsize() < 1000


def test_the_poller_moves_due_retries_and_scheduled_jobs_into_their_queue():
    sim, clients = fresh_simulator("storefront", "billing")
    now = time.time()
    for profile, client in clients.values():
        k = profile.key
        due = json.loads(client.zrange(k("retry"), 0, 0)[0])
        due["jid"] = "0123456789abcdef01234567"
        client.zadd(k("retry"), {demo.dump_json(due): now - 1})
        scheduled = json.loads(client.zrange(k("schedule"), 0, 0)[0])
        scheduled["jid"] = "fedcba9876543210fedcba98"
        client.zadd(k("schedule"), {demo.dump_json(scheduled): now - 1})
    with _no_fetch(sim):
        sim.tick(now)
    for profile, client in clients.values():
        k = profile.key
        for jid in ("0123456789abcdef01234567", "fedcba9876543210fedcba98"):
            found = [j for q in profile.queues for j in members(client, k(f"queue:{q}")) if j["jid"] == jid]
            assert len(found) == 1
            enqueued = found[0]["enqueued_at"]
            if profile.millis:
                assert type(enqueued) is int and enqueued == int(now * 1000)
            else:
                assert type(enqueued) is float and enqueued == pytest.approx(now)
        assert not any(json.loads(m)["jid"] == "0123456789abcdef01234567" for m in client.zrange(k("retry"), 0, -1))


class _no_fetch:
    """Stop processes from taking jobs during one tick (so a moved job stays visible in its queue)."""

    def __init__(self, sim):
        self.sim = sim

    def __enter__(self):
        self.original = demo.DemoSimulator._queue_order
        demo.DemoSimulator._queue_order = lambda self, spec: []
        return self

    def __exit__(self, *exc):
        demo.DemoSimulator._queue_order = self.original


def test_quiet_and_stop_signals_from_the_ui_are_honoured():
    sim, clients = fresh_simulator("search-indexer")
    profile, client = clients["search-indexer"]
    now = time.time()
    sim.tick(now)
    quiet_one, stopped_one = processes(profile, client)[:2]
    client.lpush(f"{quiet_one}-signals", "TSTP")
    client.lpush(f"{stopped_one}-signals", "TERM")
    unfinished = {json.loads(e["payload"])["jid"] for e in work_of(profile, client, stopped_one).values()}
    sim.tick(now + 1)
    assert stopped_one not in processes(profile, client)
    assert not client.exists(stopped_one) and not client.exists(f"{stopped_one}:work")
    # Launcher#stop requeues unfinished jobs (some may already run elsewhere again)
    queued = {j["jid"] for q in profile.queues for j in members(client, f"queue:{q}")}
    running = {json.loads(e["payload"])["jid"] for i in processes(profile, client) for e in work_of(profile, client, i).values()}
    assert unfinished <= queued | running
    if quiet_one in processes(profile, client):
        assert client.hget(quiet_one, "quiet") == b"true"
    for i in range(2, 20):
        sim.tick(now + i)
    hostnames = sorted(i.split(":")[0] for i in processes(profile, client))
    assert stopped_one.split(":")[0] in hostnames  # Heroku restarted the dyno: a new identity
    assert stopped_one not in processes(profile, client)


def test_a_failing_pool_is_logged_and_the_others_keep_moving(caplog):
    sim, clients = fresh_simulator("storefront", "billing")
    profile, broken = clients["storefront"]

    def explode(*args, **kwargs):
        raise ConnectionError("boom")

    sim.pools[0].client = type("Broken", (), {"pipeline": explode, "register_script": explode, "smembers": explode})()
    billing_profile, billing = clients["billing"]
    processed = int(billing.get("billing:stat:processed"))
    with caplog.at_level(logging.ERROR, logger="kiqboard.demo"):
        sim.tick()
        sim.tick()
    assert int(billing.get("billing:stat:processed")) > processed
    errors = [r for r in caplog.records if "storefront" in r.getMessage()]
    assert len(errors) == 1  # logged once, not on every tick


def test_start_is_idempotent_and_stop_ends_the_thread():
    sim, clients = fresh_simulator("billing")
    sim.interval = 0.05
    sim.start()
    thread = sim._thread
    sim.start()
    sim.ensure_started()
    assert sim._thread is thread and thread.is_alive()
    deadline = time.monotonic() + 5
    while sim.ticks < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.ticks >= 2
    sim.stop()
    assert not thread.is_alive() and not sim.running
    sim.stop()  # harmless twice
    sim.start()
    assert sim.running and sim._thread is not thread
    sim.stop()
    assert not sim.running


def test_simulator_accepts_pairs_and_refuses_unknown_clients():
    settings = demo.demo_pool_settings()[2]
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    demo.seed(client, settings, now=time.time())
    sim = demo.DemoSimulator([(settings, client)])
    sim.tick()
    assert sim.pools[0].profile.name == "search-indexer"
    with pytest.raises(ValueError):
        demo.DemoSimulator([fakeredis.FakeRedis(server=fakeredis.FakeServer())])


def test_decoded_clients_work_too():
    profile, client = seeded("billing", now=time.time(), decode_responses=True)
    sim = demo.DemoSimulator([client])
    processed = int(client.get("billing:stat:processed"))
    sim.tick()
    sim.tick()
    assert int(client.get("billing:stat:processed")) > processed


# ------------------------------------------------------------------------------------------------------------------
# the reader understands every demo payload


sidekiq_reader = pytest.importorskip("sidekiq_reader")


@pytest.mark.parametrize("name", list(demo.DEMO_PROFILES))
def test_reader_parses_every_demo_payload(name):
    profile, client = seeded(name, now=time.time())
    sim = demo.DemoSimulator([client])
    sim.tick()
    seen = 0
    for where, raw in all_payloads(profile, client):
        job = sidekiq_reader.parse_job(raw)
        assert job.valid, (where, raw)
        assert job.jid and job.queue and job.klass and job.created_at is not None
        assert job.timestamps_in_ms is profile.millis
        assert job.display_class and "ActiveJob::" not in job.display_class and "Wrapper" not in job.display_class
        if where == "retry":
            assert job.error and job.retry_count is not None
            if "error_backtrace" in job.item:
                assert job.backtrace and len(job.backtrace) > 3 and all(":in " in line for line in job.backtrace)
        if where.startswith("queue:"):
            assert job.enqueued_at is not None
        seen += 1
    assert seen > 300


@pytest.mark.parametrize("name", list(demo.DEMO_PROFILES))
def test_reader_pages_show_the_demo(name):
    if not hasattr(sidekiq_reader, "SidekiqReader"):
        pytest.skip("sidekiq_reader.SidekiqReader not written yet")
    profile, client = seeded(name, now=time.time())
    demo.DemoSimulator([client]).tick()
    reader = sidekiq_reader.SidekiqReader(client, namespace=profile.namespace)
    busy = reader.busy()
    assert 3 <= len(busy.processes) <= 6 and all(p.alive for p in busy.processes)
    assert busy.work.total > 0 and busy.work.items and all(w.job.valid for w in busy.work.items)
    assert sum(p.busy for p in busy.processes) == busy.work.total
    assert all(p.concurrency > 0 and p.hostname and p.beat for p in busy.processes)
    stats = reader.stats()
    assert stats.retries == client.zcard(profile.key("retry")) and stats.processes == len(busy.processes)
    assert stats.enqueued > 0 and stats.processed > 0
    queues = {q.name: q for q in reader.queues().queues}
    assert set(queues) == set(profile.queues)
    assert all(q.latency > 0 for q in queues.values() if q.size)
    if profile.paused:
        assert queues[profile.paused[0]].paused
    retries = reader.sorted_set("retry")
    assert retries.entries.total >= 100 and all(e.job.valid and e.job.error for e in retries.entries.items)
    history = reader.dashboard(days=180).history
    assert len(history.dates) == 180 and all(v > 0 for v in history.processed)
