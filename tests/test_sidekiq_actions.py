"""SidekiqActions on a real redis-server and on fakeredis: every action, exactly-once under races, and a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest
import redis

from demo import SIDEKIQ_POLLER_LUA
from sidekiq_actions import MOVED, NOT_FOUND, UNMOVABLE, WRONG_TYPE, SidekiqActions, edit_payload
from sidekiq_reader import entry_key
from tests.conftest import RedisServer


@pytest.fixture(params=["real", "fake"])
def client(request):
    if request.param == "real":
        return request.getfixturevalue("redis_client")
    return request.getfixturevalue("fake_redis")


def dump(job: dict) -> bytes:
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False).encode()


def job(jid: str, queue: str = "default", **extra) -> dict:
    base = {"retry": True, "queue": queue, "class": "HardWorker", "args": [1, "two"], "jid": jid,
            "created_at": 1700000000.25, "enqueued_at": 1700000001.5, "error_message": "boom",
            "error_class": "RuntimeError", "failed_at": 1700000002.75, "retry_count": 3}
    base.update(extra)
    return base


def queued(client, name: str, ns: str = "") -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(f"{ns}queue:{name}", 0, -1)]


# ---------------------------------------------------------------------------------------------------------------
# single and selected


@pytest.mark.parametrize("namespace", [None, "myapp"])
def test_retry_one_pushes_to_its_queue_with_retry_count_minus_one(client, namespace):
    ns = f"{namespace}:" if namespace else ""
    client.zadd(f"{ns}retry", {dump(job("a1", "critical")): 1700000100.5, dump(job("b2")): 1700000200.5})
    actions = SidekiqActions(client, namespace=namespace)
    before = time.time()
    assert actions.retry("retry", [entry_key(1700000100.5, "a1")]) == 1
    pushed = queued(client, "critical", ns)
    assert [p["jid"] for p in pushed] == ["a1"]
    assert pushed[0]["retry_count"] == 2
    assert isinstance(pushed[0]["enqueued_at"], float) and before <= pushed[0]["enqueued_at"] <= time.time()
    assert client.smembers(f"{ns}queues") == {b"critical"}
    assert client.zcard(f"{ns}retry") == 1
    # the same key again: gone, no-op
    assert actions.retry("retry", [entry_key(1700000100.5, "a1")]) == 0
    assert client.llen(f"{ns}queue:critical") == 1
    if namespace:
        assert not client.exists("queue:critical", "queues")


def test_retry_pushes_at_the_head(client):
    client.rpush("queue:default", b"older")
    client.zadd("retry", {dump(job("a1")): 10.0})
    assert SidekiqActions(client).retry("retry", ["10.0-a1"]) == 1
    assert client.lindex("queue:default", -1) == b"older"
    assert json.loads(client.lindex("queue:default", 0))["jid"] == "a1"


def test_enqueued_at_in_the_jobs_own_unit(client):
    sidekiq8 = job("ms", created_at=1700000000123, enqueued_at=1700000000456, failed_at=1700000000789)
    client.zadd("retry", {dump(sidekiq8): 5.0, dump(job("s")): 6.0})
    before_ms = int(time.time() * 1000)
    assert SidekiqActions(client).retry("retry", ["5.0-ms", "6.0-s"]) == 2
    by_jid = {p["jid"]: p for p in queued(client, "default")}
    assert isinstance(by_jid["ms"]["enqueued_at"], int) and by_jid["ms"]["enqueued_at"] >= before_ms
    assert isinstance(by_jid["s"]["enqueued_at"], float) and by_jid["s"]["enqueued_at"] < 1e11


def test_selected_keys_count_each_move(client):
    client.zadd("retry", {dump(job(f"j{i}")): 100.0 + i for i in range(5)})
    keys = [entry_key(100.0 + i, f"j{i}") for i in (0, 2, 4)] + ["garbage", entry_key(101.0, "nope")]
    actions = SidekiqActions(client)
    assert actions.statuses("retry", "retry", keys) == [MOVED, MOVED, MOVED, NOT_FOUND, NOT_FOUND]
    assert {p["jid"] for p in queued(client, "default")} == {"j0", "j2", "j4"}
    assert actions.retry("retry", [entry_key(101.0, "j1"), entry_key(101.0, "j1")]) == 1  # a duplicate key moves once
    assert client.llen("queue:default") == 4


def test_same_score_neighbours_are_never_taken(client):
    score = 1700000000.123456
    client.zadd("retry", {dump(job("target")): score, dump(job("neighbour")): score, dump(job("other")): score})
    actions = SidekiqActions(client)
    assert actions.retry("retry", [entry_key(score, "target")]) == 1
    assert [p["jid"] for p in queued(client, "default")] == ["target"]
    assert client.zcard("retry") == 2
    # Sidekiq's remove_job yields a lone same-score member without checking its jid; we don't
    client.zrem("retry", dump(job("other")))
    assert actions.retry("retry", [entry_key(score, "target")]) == 0
    assert actions.kill([entry_key(score, "target")]) == 0
    assert actions.delete("retry", [entry_key(score, "target")]) == 0
    assert client.zrange("retry", 0, -1) == [dump(job("neighbour"))]


def test_jid_substring_or_other_score_is_no_match(client):
    client.zadd("retry", {dump(job("abc123")): 50.0})
    actions = SidekiqActions(client)
    assert actions.retry("retry", ["50.0-abc", "50.0-bc123", "51.0-abc123", "50.0-"]) == 0
    assert client.zcard("retry") == 1 and not client.exists("queue:default")


def test_retry_from_dead(client):
    client.zadd("dead", {dump(job("d1", retry_count=25)): 1700000000.0})
    assert SidekiqActions(client).retry("dead", ["1700000000.0-d1"]) == 1
    assert queued(client, "default")[0]["retry_count"] == 24
    assert client.zcard("dead") == 0


def test_add_to_queue_adds_enqueued_at_and_keeps_retry_count(client):
    scheduled = {"class": "Mailer", "args": [], "queue": "mail", "jid": "s1", "created_at": 1700000000.5,
                 "retry_count": 1}
    client.zadd("schedule", {dump(scheduled): 1800000000.0})
    assert SidekiqActions(client).add_to_queue(["1800000000.0-s1"]) == 1
    (pushed,) = queued(client, "mail")
    assert pushed["retry_count"] == 1 and pushed["args"] == []
    assert list(pushed)[-1] == "enqueued_at"
    assert client.zcard("schedule") == 0


def test_kill_moves_unchanged_bytes_to_dead_now(client):
    raw = dump(job("k1"))
    client.zadd("retry", {raw: 10.0})
    before = time.time()
    assert SidekiqActions(client).kill(["10.0-k1"]) == 1
    (member, score), = client.zrange("dead", 0, -1, withscores=True)
    assert member == raw and before <= score <= time.time()
    assert client.zcard("retry") == 0


def test_kill_trims_dead_by_age_and_count(client):
    now = time.time()
    client.zadd("dead", {b'{"jid":"ancient"}': now - 181 * 86400, b'{"jid":"recent"}': now - 86400})
    client.zadd("retry", {dump(job("k1")): 10.0})
    SidekiqActions(client).kill(["10.0-k1"])
    assert b'{"jid":"ancient"}' not in client.zrange("dead", 0, -1)
    assert client.zcard("dead") == 2
    # count: ZREMRANGEBYRANK dead 0 -max keeps max - 1 (Sidekiq's exact quirk)
    client.zadd("dead", {f'{{"jid":"old{i}"}}'.encode(): now - 1000 + i for i in range(10)})
    client.zadd("retry", {dump(job("k2")): 11.0})
    SidekiqActions(client, dead_max_jobs=5).kill(["11.0-k2"])
    assert client.zcard("dead") == 4
    assert json.loads(client.zrange("dead", -1, -1)[0])["jid"] == "k2"


def test_delete_selected_and_all(client):
    client.zadd("schedule", {dump(job(f"s{i}")): 1.5 + i for i in range(4)})
    actions = SidekiqActions(client)
    assert actions.delete("schedule", ["1.5-s0", "2.5-s1", "2.5-s0"]) == 2
    assert actions.delete_all("schedule") == 2
    assert not client.exists("schedule")
    assert actions.delete_all("schedule") == 0
    with pytest.raises(ValueError):
        actions.delete("queue", ["1.5-s0"])


def test_delete_queue_and_one_queued_job(client):
    a, b = dump(job("q1")), dump(job("q2"))
    client.lpush("queue:default", a, b, a)
    client.sadd("queues", "default", "other")
    actions = SidekiqActions(client)
    assert actions.delete_queued_job("default", a) == 1
    assert client.lrange("queue:default", 0, -1) == [b, a]
    assert actions.delete_queued_job("default", b.decode()) == 1
    assert actions.delete_queued_job("default", b) == 0
    assert actions.delete_queue("default") is True
    assert not client.exists("queue:default") and client.smembers("queues") == {b"other"}
    assert actions.delete_queue("default") is False


def test_invalid_json_and_wrong_queue_type_are_left_in_place(client):
    client.zadd("retry", {b'{"jid":"bad",': 1.0, dump(job("wt", "broken")): 2.0, dump(job("ok")): 3.0})
    client.set("queue:broken", "not a list")
    actions = SidekiqActions(client)
    # invalid JSON has no decodable jid: it can't even be addressed by key
    assert actions.statuses("retry", "retry", ["1.0-bad", "2.0-wt", "3.0-ok"]) == [NOT_FOUND, WRONG_TYPE, MOVED]
    client.zadd("retry", {b'{"jid":"bad2","queue":"x"': 4.0, dump(job("ok2")): 5.0})
    assert actions.retry_all("retry") == 1
    assert client.zrange("retry", 0, -1) == [b'{"jid":"bad",', dump(job("wt", "broken")), b'{"jid":"bad2","queue":"x"']
    assert client.get("queue:broken") == b"not a list"


def test_unmovable_status_for_a_member_that_is_not_an_object():
    assert edit_payload(b'["jid","x"]', True, 1.0) is None
    assert UNMOVABLE == -1


# ---------------------------------------------------------------------------------------------------------------
# payload editing: every byte except the changed values stays


TRICKY = [
    b'{"class":"W","args":[],"jid":"e1","queue":"default","created_at":1700000000.1,"enqueued_at":1.5,'
    b'"retry_count":0,"x":{"a":[],"b":{},"c":[[],[{}]]}}',
    '{"class":"Ünï","args":["h\u00e9 \\u00e9 \\/ \\"q\\" \\\\",{"enqueued_at":1.5,"retry_count":9}],"jid":"e2",'
    '"retry_count":4,"enqueued_at":1.5,"created_at":1700000000.1}'.encode(),
    b'{"jid":"e3","args":[9007199254740993,1.0000000000000002,1e300,-0.0,1E-7],"retry_count":2.0,'
    b'"queue":"q\\"x"}',
    b'{ "jid" : "e4",\n  "args" : [ ],\n  "retry_count" : 7 ,\n  "enqueued_at" : 1.5 }  ',
    b'{"jid":"e5","wrapped":"X","args":[{"job_class":"X","enqueued_at":"2024-01-01T00:00:00Z"}],'
    b'"queue":"mailers","created_at":1700000000123}',
    b'{"jid":"e6","retry_count":"3","enqueued_at":null,"args":[],"error_message":"undefined method `[]\' }"}',
    b'{"jid":"e7","args":[],"queue":"default","retry_count":1,"retry_count":5,"created_at":1.5}',
]


@pytest.mark.parametrize("raw", TRICKY)
def test_edit_payload_changes_only_the_edited_values(raw):
    now = 1796000000.1234567
    edited, queue = edit_payload(raw, True, now)
    original, new = json.loads(raw), json.loads(edited)
    expected = dict(original)
    if isinstance(original.get("retry_count"), (int, float)):
        expected["retry_count"] = original["retry_count"] - 1
    ms = isinstance(original.get("created_at"), int)
    expected["enqueued_at"] = int(now * 1000) if ms else now
    assert new == expected
    assert type(new["enqueued_at"]) is (int if ms else float)
    assert new["args"] == original["args"]  # [] stays [], nested values untouched
    assert queue == (original.get("queue") or "default")
    # byte-exact outside the edited values
    rest = edited.replace(repr(now).encode(), b"").replace(str(int(now * 1000)).encode(), b"")
    assert len(edited) - len(rest) in (len(repr(now)), len(str(int(now * 1000))))
    for chunk in (b'"args":', b'"jid":'):
        assert chunk in edited or chunk.replace(b":", b" :") in edited


def test_edit_payload_is_byte_exact():
    raw = b'{"retry":true,"queue":"q","args":[[],{}],"jid":"x","created_at":1.25,"enqueued_at":2.5,"retry_count":3}'
    edited, _ = edit_payload(raw, True, 1796000000.5)
    assert edited == raw.replace(b'"enqueued_at":2.5', b'"enqueued_at":1796000000.5').replace(
        b'"retry_count":3', b'"retry_count":2')
    edited, _ = edit_payload(raw, False, 1796000000.5)
    assert edited == raw.replace(b'"enqueued_at":2.5', b'"enqueued_at":1796000000.5')


def test_big_integers_survive_on_real_redis(redis_client):
    raw = b'{"jid":"big","queue":"default","args":[123456789012345678901234567890,[]],"retry_count":2}'
    redis_client.zadd("retry", {raw: 1.0})
    assert SidekiqActions(redis_client).retry("retry", ["1.0-big"]) == 1
    pushed = redis_client.lindex("queue:default", 0)
    assert pushed.startswith(b'{"jid":"big","queue":"default","args":[123456789012345678901234567890,[]],'
                             b'"retry_count":1,"enqueued_at":')


@pytest.mark.ruby
def test_ruby_json_reads_edited_payloads_as_python_does():
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed")
    edited = [edit_payload(raw, True, 1796000000.1234567)[0] for raw in TRICKY]
    script = 'require "json"; STDIN.each_line { |line| puts JSON.generate(JSON.parse(line)) }'
    lines = b"\n".join(payload.replace(b"\n", b" ") for payload in edited) + b"\n"
    out = subprocess.run([ruby, "-e", script], input=lines, capture_output=True, check=True).stdout
    for payload, line in zip(edited, out.splitlines()):
        assert json.loads(line) == json.loads(payload)


# ---------------------------------------------------------------------------------------------------------------
# signals


def add_process(client, identity: str, embedded: bool = False, alive: bool = True, ns: str = "") -> None:
    client.sadd(f"{ns}processes", identity)
    if alive:
        client.hset(f"{ns}{identity}", mapping={"info": json.dumps({"identity": identity, "embedded": embedded}),
                                                "busy": 0, "beat": time.time(), "quiet": "false"})


@pytest.mark.parametrize("namespace", [None, "ns"])
def test_signal_only_known_non_embedded_processes(client, namespace):
    ns = f"{namespace}:" if namespace else ""
    add_process(client, "host:1:aaa", ns=ns)
    add_process(client, "host:2:bbb", embedded=True, ns=ns)
    add_process(client, "host:3:ccc", alive=False, ns=ns)
    actions = SidekiqActions(client, namespace=namespace)
    assert actions.signal("host:1:aaa", "quiet") is True
    assert client.lrange(f"{ns}host:1:aaa-signals", 0, -1) == [b"TSTP"]
    assert 0 < client.ttl(f"{ns}host:1:aaa-signals") <= 60
    assert actions.signal("host:9:zzz", "stop") is False
    assert not client.exists(f"{ns}host:9:zzz-signals")
    assert actions.signal("host:2:bbb", "stop") is False
    assert actions.signal("host:3:ccc", "stop") is True  # in `processes`: signalled, like Sidekiq
    with pytest.raises(ValueError):
        actions.signal("host:1:aaa", "dump")
    assert actions.signal_all("stop") == 1  # only the live, non-embedded one
    assert client.lrange(f"{ns}host:1:aaa-signals", 0, -1) == [b"TERM", b"TSTP"]


# ---------------------------------------------------------------------------------------------------------------
# bulk


def seed_retries(client, count: int, key: str = "retry", start: float | None = None, **extra) -> list[str]:
    start = time.time() - 10 if start is None else start
    jids = [f"{i:012x}" for i in range(count)]
    pipe = client.pipeline(transaction=False)
    for i, jid in enumerate(jids):
        pipe.zadd(key, {dump(job(jid, **extra)): start + i * 1e-4})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return jids


def test_retry_all_in_batches_with_progress(client):
    jids = seed_retries(client, 2500)
    calls = []
    moved = SidekiqActions(client, batch_size=700).retry_all("retry", progress=lambda d, t: calls.append((d, t)))
    assert moved == 2500
    assert calls == [(700, 2500), (1400, 2500), (2100, 2500), (2500, 2500)]
    pushed = queued(client, "default")
    assert sorted(p["jid"] for p in pushed) == jids
    assert [p["jid"] for p in pushed][-1] == jids[0]  # lowest score first: it runs first
    assert all(p["retry_count"] == 2 for p in pushed)
    assert client.zcard("retry") == 0


def test_retry_all_from_dead_and_namespaced(client):
    seed_retries(client, 30, key="app:dead")
    assert SidekiqActions(client, namespace="app").retry_all("dead") == 30
    assert client.llen("app:queue:default") == 30 and client.zcard("app:dead") == 0


def test_kill_all_trims_to_max_minus_one(client):
    seed_retries(client, 120)
    moved = SidekiqActions(client, batch_size=50, dead_max_jobs=100).kill_all()
    assert moved == 120
    assert client.zcard("retry") == 0 and client.zcard("dead") == 99


def test_add_all_to_queue(client):
    seed_retries(client, 40, key="schedule", queue="low")
    assert SidekiqActions(client, batch_size=7).add_all_to_queue() == 40
    assert client.llen("queue:low") == 40 and client.smembers("queues") == {b"low"}


def test_retry_all_stops_at_the_starting_size(client):
    seed_retries(client, 10)
    actions = SidekiqActions(client, batch_size=4)

    def progress(done, total):  # new failures arriving meanwhile are not chased
        client.zadd("retry", {dump(job(f"new{done}")): time.time() + 100})

    assert actions.retry_all("retry", progress=progress) == 10
    assert client.zcard("retry") == 3


# Payloads for the bulk script's in-Lua editing: each must come out exactly as edit_payload writes it, whether the
# script edits it itself or hands it back to Python (nested or escaped keys, blanks, "\u" escapes, odd values).
BULK_PAYLOADS = [
    dump(job("s6")),  # Sidekiq 6: float seconds
    dump(job("s8", created_at=1700000000123, enqueued_at=1700000000456)),  # Sidekiq 8: integer ms
    dump({"class": "W", "args": [], "jid": "norc", "queue": "default", "created_at": 1.5, "enqueued_at": 2.5}),
    dump({"class": "W", "args": [[], {}], "jid": "noenq", "retry_count": 0}),
    dump({"class": "W", "args": [], "jid": "noenq-ms", "created_at": 1700000000123}),
    b'{"jid":"nested","args":[{"retry_count":9,"enqueued_at":1,"queue":"no"}],"retry_count":2,"enqueued_at":3.5}',
    b'{"jid":"nested-after","retry_count":2,"args":[1],"x":{"enqueued_at":1}}',
    b'{"jid":"escaped","a\\"retry_count":1,"b":"\\"enqueued_at\\":7","retry_count":3,"enqueued_at":1.5}',
    b'{"jid":"in-string","error_message":"retry_count\\":1, \\"queue\\":\\"x\\" [oops}","retry_count":1}',
    dump(job("unicode", "q\u2713", error_message="h\u00e9 \u2603 [] {}")),
    json.dumps(job("u-escape", "low")).encode(),  # ensure_ascii: \u escapes anywhere go to Python
    b'{"jid":"blanks", "queue": "low", "retry_count": 4, "enqueued_at": 1.5}',
    b'{"jid":"blank-key","queue" : "low","retry_count" :4}',
    b'{"jid":"str-rc","retry_count":"3","enqueued_at":null,"queue":""}',
    b'{"jid":"float-rc","retry_count":2.0,"created_at":1e9,"queue":"q\\"x"}',
    b'{"jid":"big-rc","retry_count":12345678901234,"args":[123456789012345678901234567890]}',
    b'{"jid":"dup","args":[],"retry_count":1,"retry_count":5,"created_at":1.5}',
    b'{"jid":"myqueue","class":"queue","myqueue":"x","created_at":-5,"enqueued_at":-1E-7}',
    b'{"jid":"ws","retry_count":1} ',
    b'{"queue":"first","retry_count":1,"enqueued_at":2}',
    b"{}",
]
NOT_OBJECTS = [b"[]", b'"x"', b"7", b'{"jid":"cut",', b"null"]


@pytest.mark.parametrize("mode", ["retry", "enqueue"])
def test_bulk_payloads_are_edited_exactly_like_edit_payload(client, monkeypatch, mode):
    now = 1796000000.1234567
    monkeypatch.setattr(time, "time", lambda: now)
    key = "retry" if mode == "retry" else "schedule"
    members = BULK_PAYLOADS + NOT_OBJECTS
    client.zadd(key, {raw: i for i, raw in enumerate(members)})
    actions = SidekiqActions(client, batch_size=5)
    moved = actions.retry_all("retry") if mode == "retry" else actions.add_all_to_queue()
    assert moved == len(BULK_PAYLOADS)
    expected: dict[str, list[bytes]] = {}
    for raw in BULK_PAYLOADS:
        payload, queue = edit_payload(raw, mode == "retry", now)
        expected.setdefault(queue, []).insert(0, payload)  # LPUSH: the first moved ends up last
    for queue, payloads in expected.items():
        assert client.lrange(f"queue:{queue}", 0, -1) == payloads
    assert {m.decode() for m in client.smembers("queues")} == set(expected)
    assert client.zrange(key, 0, -1) == NOT_OBJECTS  # skipped and left in place, in order


def test_sidekiq_payloads_never_leave_redis(redis_client):
    """Sidekiq's own payloads are edited inside the bulk script: no member travels to Python and back."""
    first = b'{"queue":"default","jid":"first","retry_count":1,"created_at":1.5}'  # a key right after "{"
    redis_client.zadd("retry", {raw: i for i, raw in enumerate(BULK_PAYLOADS[:5] + [b"{}", first])})
    actions = SidekiqActions(redis_client)
    actions._item = None  # Python's editor must not be needed
    assert actions.retry_all("retry") == 7
    pushed = {json.loads(raw).get("jid"): json.loads(raw) for raw in redis_client.lrange("queue:default", 0, -1)}
    assert pushed["s6"]["retry_count"] == 2 and pushed["s8"]["retry_count"] == 2
    assert pushed["s8"]["enqueued_at"] == int(pushed["s8"]["enqueued_at"]) and type(pushed["s8"]["enqueued_at"]) is int
    assert type(pushed["s6"]["enqueued_at"]) is float and pushed["noenq"]["retry_count"] == -1
    assert pushed["noenq"]["args"] == [[], {}] and b'"args":[[],{}]' in redis_client.lrange("queue:default", 0, -1)[3]
    assert pushed["first"]["retry_count"] == 0


def test_kill_all_moves_unchanged_bytes(client):
    members = BULK_PAYLOADS[:3] + [b"[]"]
    client.zadd("retry", {raw: i for i, raw in enumerate(members)})
    assert SidekiqActions(client, batch_size=3).kill_all() == 4
    assert sorted(client.zrange("dead", 0, -1)) == sorted(members) and client.zcard("retry") == 0


def test_empty_sets(client):
    actions = SidekiqActions(client)
    assert actions.retry_all("retry") == 0 and actions.kill_all() == 0 and actions.add_all_to_queue() == 0
    assert actions.retry("retry", []) == 0


# ---------------------------------------------------------------------------------------------------------------
# races and faults (real redis-server)


def test_two_retry_alls_and_the_sidekiq_poller_race_exactly_once(redis_server, redis_client):
    count = 20_000
    jids = seed_retries(redis_client, count)
    errors, results = [], {}
    start = threading.Barrier(3)

    def operator(name):
        try:
            client = redis_server.client()
            start.wait()
            results[name] = SidekiqActions(client, batch_size=1000).retry_all("retry")
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    def poller():
        try:
            client = redis_server.client()
            zpop = client.register_script(SIDEKIQ_POLLER_LUA)
            start.wait()
            polled = 0
            while (raw := zpop(keys=["retry"], args=[repr(time.time())])) is not None:
                item = json.loads(raw)
                item["enqueued_at"] = time.time()
                client.pipeline(transaction=False).sadd("queues", item["queue"]).lpush(
                    f"queue:{item['queue']}", json.dumps(item)).execute()
                polled += 1
            results["poller"] = polled
        except Exception as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=operator, args=("a",)), threading.Thread(target=operator, args=("b",)),
               threading.Thread(target=poller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    queued_jids = [json.loads(raw)["jid"] for raw in redis_client.lrange("queue:default", 0, -1)]
    assert len(queued_jids) == count
    assert sorted(queued_jids) == jids  # every jid exactly once
    assert redis_client.zcard("retry") == 0
    assert results["a"] + results["b"] + results["poller"] == count


def test_redis_killed_mid_bulk_move_leaves_every_job_in_exactly_one_place():
    server = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    try:
        client = server.client()
        count = 30_000
        jids = seed_retries(client, count)
        actions = SidekiqActions(client, batch_size=500)
        outcome = {}

        def bulk():
            try:
                outcome["moved"] = actions.retry_all("retry")
            except redis.RedisError as error:
                outcome["error"] = error

        worker = threading.Thread(target=bulk)
        worker.start()
        deadline = time.monotonic() + 20
        while client.llen("queue:default") < count // 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.process.kill()  # SIGKILL: no graceful shutdown
        server.process.wait()
        worker.join(20)
        assert "error" in outcome, "the bulk move should have been cut off"
        server.start()  # same port, same dir: replays the AOF
        client = server.client()
        in_retry = {json.loads(raw)["jid"] for raw in client.zrange("retry", 0, -1)}
        in_queue = [json.loads(raw)["jid"] for raw in client.lrange("queue:default", 0, -1)]
        assert in_retry and in_queue, "the kill should land mid-move"
        assert len(in_queue) == len(set(in_queue))
        assert not in_retry & set(in_queue)
        assert in_retry | set(in_queue) == set(jids)
        # and the rest can still be moved afterwards
        assert SidekiqActions(client).retry_all("retry") == len(in_retry)
        assert sorted(json.loads(raw)["jid"] for raw in client.lrange("queue:default", 0, -1)) == jids
    finally:
        server.cleanup()


def test_decode_responses_client(redis_server, redis_client):
    client = redis_server.client(decode_responses=True)
    redis_client.zadd("retry", {dump(job("u1", args=["é"])): 3.0})
    actions = SidekiqActions(client)
    assert actions.retry("retry", ["3.0-u1"]) == 1
    assert json.loads(redis_client.lindex("queue:default", 0))["args"] == ["é"]
    seed_retries(redis_client, 20)
    assert actions.retry_all("retry") == 20
    assert os.environ.get("KIQBOARD_NEVER_SET") is None
