"""Interop: kiqboard's SidekiqActions against a REAL `sidekiq` process (Debian's ruby-sidekiq 6.4.1).

- a job retried from the retry set or from dead is executed by Sidekiq (its jid lands in the executed list, its
  args arrive intact, Ruby parses the payload we rewrote, nothing fails);
- scheduled jobs added to the queue run;
- a quieted process reports quiet=true in its hash; a stopped one leaves `processes`;
- the race of issue 4: thousands of due retry (and scheduled) entries while Sidekiq's own poller drains them and
  two Retry All run at once — every jid is executed or queued exactly once;
- Sidekiq 8 style payloads (integer-millisecond timestamps) retried by us are run by Ruby without errors.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import pytest

from conftest import RedisServer
from sidekiq_support import (
    PAYLOADS,
    SidekiqProcess,
    executed_args,
    executed_jids,
    nskey,
    queue_jids,
    require_ruby,
    seed,
    wait_until,
)

pytestmark = pytest.mark.ruby

NAMESPACES = [None, "myapp"]
QUEUES = ["default", "critical", "low", "mailers"]


@pytest.fixture(scope="module")
def server():
    require_ruby()
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def workers(server):
    """One real sidekiq process per namespace (none / "myapp"), on the queues the seeded jobs use."""
    processes = {}
    try:
        for ns in NAMESPACES:
            processes[ns] = SidekiqProcess(server.url, ns, queues=QUEUES, concurrency=5, tag=f"act-{ns or 'plain'}")
            processes[ns].start()
        yield processes
    finally:
        for process in processes.values():
            process.stop(timeout=5)


@pytest.fixture(params=NAMESPACES, ids=["plain", "namespaced"])
def app(request, server, workers):
    from sidekiq_actions import SidekiqActions
    from sidekiq_reader import SidekiqReader

    ns = request.param
    client = server.client(decode_responses=False)
    yield ns, client, SidekiqReader(client, ns), SidekiqActions(client, ns), workers[ns]
    client.close()


def _keys(reader, set_name: str, jids) -> list[str]:
    entries = reader.sorted_set(set_name, count=1000).entries.items
    keys = [e.key for e in entries if e.job.jid in set(jids)]
    assert len(keys) == len(set(jids)), (set_name, jids, [e.job.jid for e in entries])
    return keys


def _wait_executed(client, ns, jids, timeout=15.0) -> None:
    want = set(jids)
    wait_until(lambda: want <= set(executed_jids(client, ns)), timeout, f"jobs {sorted(want)} to be executed")


def _payloads(client, ns) -> dict:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(nskey(ns, PAYLOADS)).items()}


def _clear_sets(actions) -> None:
    for name in ("retry", "schedule", "dead"):
        actions.delete_all(name)


def _assert_no_failures(client, ns, process, failed_before) -> None:
    # the log is immediate; stat:failed is flushed by the next heartbeat (a failure would also mean a missing jid)
    assert process.log_errors() == [], process.log_errors()
    assert int(client.get(nskey(ns, "stat:failed")) or 0) == failed_before


# --------------------------------------------------------------------------------------------------------------


def test_retried_jobs_from_retry_and_dead_are_executed(app, server):
    ns, client, reader, actions, process = app
    _clear_sets(actions)
    seeded = seed(server.url, ns, "actions")["jids"]
    failed_before = int(client.get(nskey(ns, "stat:failed")) or 0)
    originals = {e.job.jid: e.job for name in ("retry", "dead") for e in reader.sorted_set(name, count=1000).entries.items}

    # one at a time, then the selected rest, from retry
    first, *rest = seeded["retry"]
    assert actions.retry("retry", _keys(reader, "retry", [first])) == 1
    _wait_executed(client, ns, [first])
    assert actions.retry("retry", _keys(reader, "retry", rest + seeded["retry_aj"])) == len(rest) + len(seeded["retry_aj"])
    # from dead (PlainWorker retry: 0 and an ActiveJob)
    assert actions.retry("dead", _keys(reader, "dead", seeded["dead"][:1])) == 1
    assert actions.retry_all("dead") == len(seeded["dead"]) - 1 + len(seeded["dead_aj"])
    everything = seeded["retry"] + seeded["retry_aj"] + seeded["dead"] + seeded["dead_aj"]
    _wait_executed(client, ns, everything)

    # each ran exactly once, with the args it had, and Sidekiq parsed the payload we rewrote
    ran = Counter(executed_jids(client, ns))
    assert {jid: ran[jid] for jid in everything} == {jid: 1 for jid in everything}
    args = executed_args(client, ns)
    for jid in seeded["retry"] + seeded["dead"]:
        assert args[jid] == originals[jid].args, jid
    payloads = _payloads(client, ns)
    for jid in everything:
        original, parsed = originals[jid].item, payloads[jid]
        assert parsed["retry_count"] == original["retry_count"] - 1, jid  # "a manual retry doesn't count"
        assert isinstance(parsed["enqueued_at"], float) and abs(parsed["enqueued_at"] - time.time()) < 30, jid
        assert parsed["created_at"] == original["created_at"], jid
        assert {k: v for k, v in parsed.items() if k not in ("retry_count", "enqueued_at")} == {
            k: v for k, v in original.items() if k not in ("retry_count", "enqueued_at")}, jid
    assert reader.stats().retries == 0 and reader.stats().dead == 0
    _assert_no_failures(client, ns, process, failed_before)


def test_scheduled_jobs_added_to_the_queue_run(app, server):
    ns, client, reader, actions, process = app
    _clear_sets(actions)
    seeded = seed(server.url, ns, "actions")["jids"]
    actions.delete_all("retry")  # this test is about the schedule
    actions.delete_all("dead")
    failed_before = int(client.get(nskey(ns, "stat:failed")) or 0)
    first, *rest = seeded["schedule"]
    assert actions.add_to_queue(_keys(reader, "schedule", [first])) == 1
    _wait_executed(client, ns, [first])
    assert actions.add_all_to_queue() == len(rest) + len(seeded["schedule_aj"])
    everything = seeded["schedule"] + seeded["schedule_aj"]
    _wait_executed(client, ns, everything)
    ran = Counter(executed_jids(client, ns))
    assert {jid: ran[jid] for jid in everything} == {jid: 1 for jid in everything}
    payloads = _payloads(client, ns)
    for jid in everything:
        assert isinstance(payloads[jid]["enqueued_at"], float), jid  # scheduled members carry none until pushed
    assert reader.stats().scheduled == 0
    _assert_no_failures(client, ns, process, failed_before)


def test_sidekiq8_style_millisecond_payloads_are_run_by_ruby(app):
    """created_at etc. as integer ms (Sidekiq 8): retried by us with enqueued_at in ms; Ruby 6.4 still runs it."""
    ns, client, reader, actions, process = app
    failed_before = int(client.get(nskey(ns, "stat:failed")) or 0)
    now_ms = int(time.time() * 1000)
    jids = [uuid.uuid4().hex[:24] for _ in range(3)]
    for i, jid in enumerate(jids):
        payload = {"retry": True, "queue": "default", "class": "PlainWorker", "args": ["ms", i, {"x": [1, 2.5]}],
                   "jid": jid, "created_at": now_ms - 60_000, "enqueued_at": now_ms - 59_000,
                   "failed_at": now_ms - 58_000, "retry_count": 2, "retried_at": now_ms - 1000,
                   "error_message": "boom", "error_class": "RuntimeError", "tags": ["ms"]}
        client.zadd(nskey(ns, "retry" if i < 2 else "dead"), {json.dumps(payload, separators=(",", ":")): time.time() + 3600})
    assert actions.retry("retry", _keys(reader, "retry", jids[:2])) == 2
    assert actions.retry("dead", _keys(reader, "dead", jids[2:])) == 1
    _wait_executed(client, ns, jids)
    payloads = _payloads(client, ns)
    args = executed_args(client, ns)
    for i, jid in enumerate(jids):
        parsed = payloads[jid]
        assert isinstance(parsed["enqueued_at"], int), parsed  # the job's own unit: integer milliseconds
        assert abs(parsed["enqueued_at"] - time.time() * 1000) < 30_000, parsed
        assert parsed["created_at"] == now_ms - 60_000 and parsed["retry_count"] == 1
        assert args[jid] == ["ms", i, {"x": [1, 2.5]}]
    _assert_no_failures(client, ns, process, failed_before)


# --------------------------------------------------------------------------------------------------------------
# quiet / stop (own processes: the module's workers keep running)


@pytest.mark.parametrize("ns", NAMESPACES, ids=["plain", "namespaced"])
def test_quiet_then_stop_one_process(server, ns):
    from sidekiq_actions import SidekiqActions
    from sidekiq_reader import SidekiqReader

    sig_ns = f"{ns}-sig" if ns else None
    db = 1 if ns is None else 0  # database 0 has the module's workers (no namespace)
    client = server.client(db=db)
    actions, reader = SidekiqActions(client, sig_ns), SidekiqReader(client, sig_ns)
    with SidekiqProcess(f"redis://127.0.0.1:{server.port}/{db}", sig_ns, queues=["nothing"], concurrency=1, tag="to-signal",
                        heartbeat=1) as process:
        assert actions.signal("no-such-host:1:abc", "quiet") is False
        assert not client.exists(nskey(sig_ns, "no-such-host:1:abc-signals"))
        assert actions.signal(process.identity, "quiet") is True
        # the process RPOPs one signal per heartbeat (1 s here, 5 s in Sidekiq), then reports quiet at the next one
        wait_until(lambda: process.hash().get("quiet") == "true", 15, "quiet=true in the process hash", 0.1)
        (p,) = reader.busy().processes
        assert p.quiet is True and p.identity == process.identity
        assert process.running()
        assert actions.signal(process.identity, "stop") is True
        wait_until(lambda: not client.sismember(nskey(sig_ns, "processes"), process.identity), 20,
                   "the stopped process to leave `processes`", 0.1)
        assert process.wait_exit(10) == 0
        assert reader.busy().processes == [] and reader.stats().processes == 0
    client.close()


def test_quiet_all_and_stop_all(server):
    from sidekiq_actions import SidekiqActions

    ns = "sigall"
    client = server.client()
    actions = SidekiqActions(client, ns)
    procs = [SidekiqProcess(server.url, ns, queues=["nothing"], concurrency=1, tag=f"all-{i}", heartbeat=1)
             for i in range(2)]
    try:
        for p in procs:
            p.start()
        assert actions.signal_all("quiet") == 2
        for p in procs:
            wait_until(lambda: p.hash().get("quiet") == "true", 15, f"{p.identity} quiet", 0.1)
        assert actions.signal_all("stop") == 2
        wait_until(lambda: client.scard(nskey(ns, "processes")) == 0, 20, "all processes to leave", 0.1)
        for p in procs:
            assert p.wait_exit(10) == 0
    finally:
        for p in procs:
            p.stop(timeout=2)
        client.close()


# --------------------------------------------------------------------------------------------------------------
# the race of issue 4


RACE_SIZE = 3000


@pytest.mark.parametrize("set_name", ["retry", "schedule"])
def test_bulk_move_races_sidekiqs_poller_exactly_once(server, set_name):
    """RACE_SIZE due entries; Sidekiq's poller is draining them when two Retry All (or Add all to queue) start at
    once. Every jid must end up executed or still queued exactly once; nothing left behind, nothing twice."""
    from sidekiq_actions import SidekiqActions

    ns = f"race-{set_name}"
    queue = "race"
    client = server.client()
    with SidekiqProcess(server.url, ns, queues=[queue], concurrency=10, tag="race", poll_interval=0.5) as process:
        now = time.time()
        jids = [uuid.uuid4().hex[:24] for _ in range(RACE_SIZE)]
        pipe = client.pipeline(transaction=False)
        for i, jid in enumerate(jids):
            payload = {"retry": True, "queue": queue, "class": "PlainWorker", "args": [i], "jid": jid,
                       "created_at": now - 100}
            if set_name == "retry":
                payload.update({"enqueued_at": now - 100, "failed_at": now - 90, "retry_count": 0,
                                "error_message": "x", "error_class": "RuntimeError"})
            # all due; a few share a score (the poller's LIMIT 0 1 and our jid check must not mix them up)
            pipe.zadd(nskey(ns, set_name), {json.dumps(payload): now - 50 - (i // 3) * 0.001})
        pipe.execute()  # the poller may already be at work (its first poll is 0-5 s after boot)

        # wait until the real poller is draining (its first poll is 0-5 s after boot), then go
        wait_until(lambda: client.zcard(nskey(ns, set_name)) < RACE_SIZE, 20, "Sidekiq's poller to start", 0.002)
        results: list[int] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def operator() -> None:
            c = server.client()
            try:
                a = SidekiqActions(c, ns, batch_size=25)  # small batches: the poller gets in between
                barrier.wait()
                results.append(a.retry_all("retry") if set_name == "retry" else a.add_all_to_queue())
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                c.close()

        threads = [threading.Thread(target=operator) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        ours = sum(results)
        poller = RACE_SIZE - ours
        print(f"race on {set_name}: operators moved {results}, Sidekiq's poller {poller}")

        # let Sidekiq work the queue off, then count every jid: executed + still queued
        wait_until(lambda: client.zcard(nskey(ns, set_name)) == 0, 20, "the set to be empty")
        wait_until(lambda: client.llen(nskey(ns, f"queue:{queue}")) == 0
                   and len(executed_jids(client, ns)) >= RACE_SIZE, 60, "Sidekiq to run every job", 0.1)
        time.sleep(1.0)  # a duplicate would still be on its way
        seen = Counter(executed_jids(client, ns)) + Counter(queue_jids(client, queue, ns))
        duplicates = {jid: n for jid, n in seen.items() if n > 1}
        missing = set(jids) - set(seen)
        assert not duplicates, f"{len(duplicates)} jids ran twice, e.g. {list(duplicates)[:5]}"
        assert not missing, f"{len(missing)} jids lost, e.g. {list(missing)[:5]}"
        assert set(seen) == set(jids)
        assert 0 < ours < RACE_SIZE and poller > 0, (results, poller)  # it really was a race
        assert all(r >= 0 for r in results)
        assert process.log_errors() == []
    client.close()
