"""sidekiq_reader: job parsing for every Sidekiq format, and every page read on fakeredis and a real redis-server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import zlib

import pytest
import redis

import sidekiq_reader as sr
from sidekiq_reader import SidekiqReader, entry_key, parse_job, parse_key

UTC = dt.timezone.utc
NOW = time.time()


@pytest.fixture(autouse=True)
def fresh_now():
    """Latencies are measured against the wall clock: seed each test relative to its own start."""
    global NOW
    NOW = time.time()


# ---------------------------------------------------------------------------------------------------------------
# helpers


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def backtrace_6x(lines: list[str]) -> str:
    """Sidekiq 6.x: Base64.encode64(Zlib::Deflate.deflate(json)) -- newline every 60 chars."""
    return base64.encodebytes(zlib.compress(json.dumps(lines).encode())).decode()


def backtrace_8x(lines: list[str]) -> str:
    """Sidekiq 8.x: [deflated].pack("m0") -- strict base64, no newlines."""
    return base64.b64encode(zlib.compress(json.dumps(lines).encode())).decode()


LONG_BACKTRACE = [f"/app/lib/worker_{i}.rb:{i}:in `perform'" for i in range(40)]


def job_6x(jid: str = "a1b2c3d4e5f6a1b2c3d4e5f6", **extra) -> dict:
    return {
        "class": "HardWorker", "args": [1, "two", {"three": 3}], "retry": True, "queue": "default", "jid": jid,
        "created_at": 1700000000.25, "enqueued_at": 1700000001.5, **extra,
    }


def job_8x(jid: str = "b1b2c3d4e5f6a1b2c3d4e5f6", **extra) -> dict:
    return {
        "class": "HardWorker", "args": [7], "retry": 5, "queue": "critical", "jid": jid,
        "created_at": 1700000000250, "enqueued_at": 1700000001500, **extra,
    }


def snapshot(client: redis.Redis) -> dict:
    """Every key with its type, value and TTL presence, to prove a read wrote nothing."""
    state = {}
    for key in client.keys("*"):
        state[key] = (client.type(key), client.dump(key), client.ttl(key) > 0)
    return state


@pytest.fixture(params=["fake", "real"])
def r(request) -> redis.Redis:
    """The core tests run on both fakeredis (Lua via lupa) and the session's real redis-server."""
    if request.param == "fake":
        return request.getfixturevalue("fake_redis")
    return request.getfixturevalue("redis_client")


@pytest.fixture(params=[None, "myapp"])
def ns(request) -> str | None:
    return request.param


def k(ns: str | None, name: str) -> str:
    return f"{ns}:{name}" if ns else name


def seed_process(client, ns, identity, *, info=None, busy="0", beat=None, quiet="false", rss=None, rtt=None,
                 concurrency=None, work=None, workers=None, alive=True):
    client.sadd(k(ns, "processes"), identity)
    if alive:
        fields = {"info": dumps(info if info is not None else {"hostname": identity.split(":")[0], "pid": 42,
                                                               "concurrency": 10, "queues": ["default"]}),
                  "busy": busy, "beat": str(beat if beat is not None else NOW), "quiet": quiet}
        if rss is not None:
            fields["rss"] = str(rss)
        if rtt is not None:
            fields["rtt_us"] = str(rtt)
        if concurrency is not None:
            fields["concurrency"] = str(concurrency)
        client.hset(k(ns, identity), mapping=fields)
        client.expire(k(ns, identity), 60)
    if work:
        client.hset(k(ns, f"{identity}:work"), mapping=work)
    if workers:
        client.hset(k(ns, f"{identity}:workers"), mapping=workers)


def work_entry(payload, run_at, queue="default") -> str:
    return dumps({"queue": queue, "payload": payload, "run_at": run_at})


# ---------------------------------------------------------------------------------------------------------------
# keys


@pytest.mark.parametrize("score, jid", [
    (1700000000.123456, "a1b2c3"), (1700000000.0, "x"), (0.1 + 0.2, "j"), (1e-05, "j-with-dashes"),
    (-3.5, "neg"), (1e16, "big"), (1712345678.9876543, "f"),
])
def test_entry_key_round_trips_through_parse_key(score, jid):
    key = entry_key(score, jid)
    assert key == f"{score!r}-{jid}"
    assert parse_key(key) == (score, jid)


def test_entry_key_format_matches_spec():
    assert entry_key(1700000000.123456, "abc") == "1700000000.123456-abc"
    assert entry_key(1700000000, "abc") == "1700000000.0-abc"


@pytest.mark.parametrize("key", ["", "abc", "-abc", "1.5-", "abc-def", "1.5", "nan-j", " 1.5-j", "1..5-j", None, 5])
def test_parse_key_rejects_malformed(key):
    assert parse_key(key) is None


# ---------------------------------------------------------------------------------------------------------------
# jobs: every version's format


def test_job_sidekiq_6x_payload_all_fields():
    item = job_6x(retry_count=2, failed_at=1700000100.5, retried_at=1700000200.75, error_class="RuntimeError",
                  error_message="boom <b>", error_backtrace=backtrace_6x(LONG_BACKTRACE), tags=["a", "b"],
                  bid="BID123", retry_queue="low", custom={"x": 1})
    job = parse_job(dumps(item).encode())
    assert job.valid and job.item == item
    assert job.klass == job.display_class == "HardWorker"
    assert job.display_args == [1, "two", {"three": 3}]
    assert job.jid == "a1b2c3d4e5f6a1b2c3d4e5f6" and job.queue == "default" and job.bid == "BID123"
    assert job.tags == ["a", "b"]
    assert job.created_at == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert job.enqueued_at == dt.datetime(2023, 11, 14, 22, 13, 21, 500000, tzinfo=UTC)
    assert job.failed_at == dt.datetime(2023, 11, 14, 22, 15, 0, 500000, tzinfo=UTC)
    assert job.retried_at == dt.datetime(2023, 11, 14, 22, 16, 40, 750000, tzinfo=UTC)
    assert job.retry_count == 2
    assert job.error_class == "RuntimeError" and job.error_message == "boom <b>"
    assert job.error == "RuntimeError: boom <b>"
    assert "\n" in item["error_backtrace"]  # really the wrapped encode64 form
    assert job.backtrace == LONG_BACKTRACE
    assert job.extras == {"retry_queue": "low", "custom": {"x": 1}, "bid": "BID123"}
    assert job.timestamps_in_ms is False
    assert job.raw_bytes == dumps(item).encode() and job.raw == dumps(item)


def test_job_sidekiq_8x_integer_milliseconds_and_strict_backtrace():
    item = job_8x(failed_at=1700000100500, retried_at=1700000200750, retry_count=0,
                  error_class="ArgumentError", error_message="bad", error_backtrace=backtrace_8x(LONG_BACKTRACE))
    job = parse_job(dumps(item))
    assert "\n" not in item["error_backtrace"]
    assert job.timestamps_in_ms is True
    assert job.created_at == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert job.enqueued_at == dt.datetime(2023, 11, 14, 22, 13, 21, 500000, tzinfo=UTC)
    assert job.failed_at == dt.datetime(2023, 11, 14, 22, 15, 0, 500000, tzinfo=UTC)
    assert job.retry_count == 0
    assert job.backtrace == LONG_BACKTRACE


def test_job_sidekiq_5x_raw_array_backtrace():
    job = parse_job(dumps(job_6x(error_backtrace=["a.rb:1", "b.rb:2"])))
    assert job.backtrace == ["a.rb:1", "b.rb:2"]


def test_job_timestamps_in_ms_follows_created_at_type():
    assert parse_job(dumps({"class": "X", "created_at": 1700000000.0})).timestamps_in_ms is False
    assert parse_job(dumps({"class": "X", "created_at": 1700000000000})).timestamps_in_ms is True
    assert parse_job(dumps({"class": "X", "enqueued_at": 1700000000000})).timestamps_in_ms is True


def test_job_integer_seconds_from_non_ruby_clients_are_seconds():
    assert parse_job(dumps({"class": "X", "created_at": 1700000000})).created_at == dt.datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize("wrapper", sorted(sr.ACTIVE_JOB_WRAPPERS))
def test_active_job_wrapper_unwraps_class_and_arguments(wrapper):
    item = {
        "class": wrapper, "wrapped": "ImportJob", "queue": "default", "jid": "j1",
        "args": [{
            "job_class": "ImportJob", "job_id": "aj-1", "queue_name": "default",
            "arguments": [
                {"_aj_globalid": "gid://app/User/1"},
                {"name": "x", "user": {"_aj_globalid": "gid://app/User/2"}, "_aj_symbol_keys": ["name"]},
                [1, {"_aj_ruby2_keywords": ["a"], "a": 1}],
            ],
        }],
    }
    job = parse_job(dumps(item))
    assert job.klass == wrapper
    assert job.display_class == "ImportJob"
    assert job.display_args == ["gid://app/User/1", {"name": "x", "user": "gid://app/User/2"}, [1, {"a": 1}]]


def test_active_job_without_wrapped_uses_first_arg_and_no_args():
    item = {"class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "args": ["OldJob", 1]}
    job = parse_job(dumps(item))
    assert job.display_class == "OldJob"
    assert job.display_args == []


def test_action_mailer_delivery_job():
    item = {"class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "wrapped": "ActionMailer::DeliveryJob",
            "args": [{"job_class": "ActionMailer::DeliveryJob",
                      "arguments": ["UserMailer", "welcome", "deliver_now", {"_aj_globalid": "gid://a/User/9"}, 5]}]}
    job = parse_job(dumps(item))
    assert job.display_class == "UserMailer#welcome"
    assert job.display_args == ["gid://a/User/9", 5]


def test_action_mailer_mail_delivery_job_shows_params_and_args():
    item = {"class": "Sidekiq::ActiveJob::Wrapper", "wrapped": "ActionMailer::MailDeliveryJob",
            "args": [{"job_class": "ActionMailer::MailDeliveryJob",
                      "arguments": ["UserMailer", "reset", "deliver_now",
                                    {"params": {"token": "t"}, "args": [{"_aj_globalid": "gid://a/User/3"}],
                                     "_aj_ruby2_keywords": ["params", "args"]}]}]}
    job = parse_job(dumps(item))
    assert job.display_class == "UserMailer#reset"
    assert job.display_args == [{"token": "t"}, ["gid://a/User/3"]]


def test_display_class_override_and_encrypt():
    job = parse_job(dumps({"class": "Secret", "display_class": "Shown", "encrypt": True, "args": [1, "CIPHERTEXT"]}))
    assert job.display_class == "Shown"
    assert job.display_args == [1, "[encrypted data]"]
    assert job.item["args"] == [1, "CIPHERTEXT"]  # the parsed payload itself is untouched
    assert job.extras == {"encrypt": True}


def test_delayed_extension_is_not_yaml_loaded():
    item = {"class": "Sidekiq::Extensions::DelayedClass", "args": ["---\n- !ruby/object:Kernel\n- :system\n"]}
    job = parse_job(dumps(item))
    assert job.display_class == "Sidekiq::Extensions::DelayedClass"
    assert job.display_args == item["args"]


@pytest.mark.parametrize("member", [
    b"not json", b"{\"class\":", b"[1,2,3]", b"\"just a string\"", b"42", b"null", b"", b"{\"a\":NaN}",
    b"[" * 5000 + b"]" * 5000,
])
def test_invalid_payloads_show_raw_text(member):
    job = parse_job(member)
    assert job.valid is False
    assert job.item == {} and job.klass == "" and job.jid is None
    assert job.display_args == [member.decode()]
    assert job.raw_bytes == member


def test_non_utf8_member_keeps_exact_bytes_and_still_parses():
    member = b'{"class":"X","jid":"j9","args":["caf\xe9"]}'
    job = parse_job(member)
    assert job.raw_bytes == member
    assert job.valid and job.jid == "j9"
    assert job.display_args == ["caf\ufffd"]
    assert "\ufffd" in job.raw


def test_wrong_types_in_every_field_never_raise():
    item = {"class": {"evil": 1}, "args": "not-a-list", "jid": 123, "queue": ["q"], "created_at": "yesterday",
            "enqueued_at": True, "failed_at": [1], "retried_at": 1e400 if False else 1e300, "retry_count": "abc",
            "error_class": 5, "error_message": None, "error_backtrace": "!!!garbage!!!", "tags": "solo", "bid": 7,
            "display_class": None, "wrapped": 3}
    job = parse_job(dumps(item))
    assert job.valid
    assert job.klass == '{"evil":1}' and job.display_class == '{"evil":1}'
    assert job.display_args == ["not-a-list"]
    assert job.jid == "123" and job.queue == '["q"]' and job.bid == "7"
    assert job.created_at is None and job.enqueued_at is None and job.failed_at is None and job.retried_at is None
    assert job.retry_count is None
    assert job.error_class == "5" and job.error_message is None and job.error == "5: "
    assert job.backtrace == ["!!!garbage!!!"]
    assert job.tags == ["solo"]


@pytest.mark.parametrize("backtrace, expected", [
    (base64.b64encode(b"not zlib").decode(), None),
    (base64.b64encode(zlib.compress(b"\x04\x08[\x06")).decode(), None),  # Marshal data: never loaded
    (base64.b64encode(zlib.compress(b'{"not":"a list"}')).decode(), None),
    ([1, None, {"a": 1}], ["1", "", '{"a":1}']),
    (12, ["12"]),
])
def test_backtrace_garbage_variants(backtrace, expected):
    job = parse_job(dumps({"class": "X", "error_backtrace": backtrace}))
    assert job.backtrace == (expected if expected is not None else [backtrace])


def test_backtrace_decompression_is_bounded():
    bomb = base64.b64encode(zlib.compress(b"[" + b" " * (sr._MAX_BACKTRACE_BYTES + 10) + b"]")).decode()
    job = parse_job(dumps({"class": "X", "error_backtrace": bomb}))
    assert job.backtrace == [bomb]


def test_active_job_with_broken_structure_falls_back():
    for args in (["x"], [{"arguments": "nope"}], [], [None]):
        job = parse_job(dumps({"class": "Sidekiq::ActiveJob::Wrapper", "wrapped": "MyJob", "args": args}))
        assert job.display_class == "MyJob"
        assert job.display_args == args
    job = parse_job(dumps({"class": "Sidekiq::ActiveJob::Wrapper", "wrapped": "ActionMailer::DeliveryJob",
                           "args": [{"arguments": [{"a": 1}]}]}))
    assert job.display_class == '{"a":1}'
    assert job.display_args == []


def test_html_in_payload_is_plain_data():
    job = parse_job(dumps({"class": "<script>alert(1)</script>", "args": ["<img src=x onerror=alert(1)>"],
                           "tags": ["<b>"]}))
    assert job.display_class == "<script>alert(1)</script>"
    assert job.display_args == ["<img src=x onerror=alert(1)>"]
    assert job.tags == ["<b>"]


def test_job_from_dict_payload():
    job = parse_job({"class": "Old", "args": [1], "jid": "z"})
    assert job.valid and job.klass == "Old" and job.jid == "z" and json.loads(job.raw) == job.item


def test_job_latency_rules():
    assert sr.job_latency(dumps({"enqueued_at": NOW - 10.0}), NOW) == pytest.approx(10.0)
    assert sr.job_latency(dumps({"created_at": int((NOW - 20) * 1000)}), NOW) == pytest.approx(20.0, abs=0.01)
    assert sr.job_latency(dumps({"enqueued_at": int((NOW - 3) * 1000), "created_at": 1.0}), NOW) == pytest.approx(
        3.0, abs=0.01)
    assert sr.job_latency(dumps({"class": "X"}), NOW) == 0.0
    assert sr.job_latency(b"garbage", NOW) == 0.0
    assert sr.job_latency(None, NOW) == 0.0
    assert sr.job_latency(dumps({"enqueued_at": "soon"}), NOW) == 0.0


def test_page_pages():
    assert sr.Page(items=[], page=1, count=25, total=0).pages == 1
    assert sr.Page(items=[], page=1, count=25, total=25).pages == 1
    assert sr.Page(items=[], page=1, count=25, total=26).pages == 2


def test_glob_escape():
    assert sr.glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"


# ---------------------------------------------------------------------------------------------------------------
# stats, history, info


def seed_stats(client, ns):
    client.set(k(ns, "stat:processed"), "1234")
    client.set(k(ns, "stat:failed"), "56")
    client.sadd(k(ns, "queues"), "default", "low", "empty")
    client.lpush(k(ns, "queue:default"), dumps(job_6x("d1", enqueued_at=NOW - 30)), dumps(job_6x("d2")))
    client.lpush(k(ns, "queue:low"), *[dumps(job_6x(f"l{i}")) for i in range(5)])
    client.lpush(k(ns, "queue:unregistered"), dumps(job_6x("u")))  # not in `queues`: invisible, as in Sidekiq
    client.zadd(k(ns, "schedule"), {dumps(job_6x(f"s{i}")): NOW + i for i in range(3)})
    client.zadd(k(ns, "retry"), {dumps(job_6x(f"r{i}")): NOW + i for i in range(4)})
    client.zadd(k(ns, "dead"), {dumps(job_6x(f"x{i}")): NOW - i for i in range(2)})
    seed_process(client, ns, "host1:1:aaa", busy="3")
    seed_process(client, ns, "host2:2:bbb", busy="4")
    seed_process(client, ns, "gone:3:ccc", alive=False)


def test_stats_exactly_like_sidekiq(r, ns):
    seed_stats(r, ns)
    stats = SidekiqReader(r, ns).stats()
    assert (stats.processed, stats.failed, stats.scheduled, stats.retries, stats.dead) == (1234, 56, 3, 4, 2)
    assert stats.processes == 3  # SCARD: the gone process still counts, as in Sidekiq
    assert stats.busy == 7
    assert stats.enqueued == 7
    assert stats.default_latency == pytest.approx(30, abs=2)  # the tail (oldest) job of queue:default


def test_stats_of_empty_redis(r):
    assert SidekiqReader(r).stats() == sr.Stats(0, 0, 0, 0, 0, 0, 0, 0, 0.0)


def test_namespace_isolates_keys(r):
    seed_stats(r, "other")
    assert SidekiqReader(r).stats().processed == 0
    assert SidekiqReader(r, "myapp").stats().retries == 0
    assert SidekiqReader(r, "other").stats().retries == 4
    assert SidekiqReader(r, "other").key("retry") == "other:retry"
    assert SidekiqReader(r).key("retry") == "retry"


def test_default_latency_created_at_ms_fallback(r):
    r.lpush("queue:default", dumps({"class": "X", "created_at": int((NOW - 100) * 1000)}))
    assert SidekiqReader(r).stats().default_latency == pytest.approx(100, abs=3)


def test_stats_as_sidekiq_json_and_stats_json(r):
    seed_stats(r, None)
    data = SidekiqReader(r).stats_json()
    assert set(data) == {"sidekiq", "redis", "server_utc_time"}
    assert data["sidekiq"] | {"default_latency": 0} == {
        "processed": 1234, "failed": 56, "busy": 7, "processes": 3, "enqueued": 7, "scheduled": 3, "retries": 4,
        "dead": 2, "default_latency": 0}
    assert set(data["redis"]) == {"redis_version", "uptime_in_days", "connected_clients", "used_memory_human",
                                  "used_memory_peak_human"}
    assert data["server_utc_time"].endswith(" UTC") and len(data["server_utc_time"]) == 12


def test_queue_sizes_sorted_by_size(r, ns):
    seed_stats(r, ns)
    sizes = SidekiqReader(r, ns).queue_sizes()
    assert list(sizes.items()) == [("low", 5), ("default", 2), ("empty", 0)]


def test_history(r, ns):
    today = dt.datetime.now(UTC).date()
    r.set(k(ns, f"stat:processed:{today.isoformat()}"), "10")
    r.set(k(ns, f"stat:failed:{today.isoformat()}"), "1")
    r.set(k(ns, f"stat:processed:{(today - dt.timedelta(days=2)).isoformat()}"), "30")
    r.hset(k(ns, f"stat:failed:{(today - dt.timedelta(days=1)).isoformat()}"), "x", "1")  # wrong type: 0
    data = SidekiqReader(r, ns).dashboard(days=3)
    assert data.history.dates == [today, today - dt.timedelta(days=1), today - dt.timedelta(days=2)]
    assert data.history.processed == [10, 0, 30]
    assert data.history.failed == [1, 0, 0]


@pytest.mark.parametrize("days, expected", [(0, 1), (-5, 1), (1, 1), (180, 180), (500, 180)])
def test_history_days_clamped(fake_redis, days, expected):
    history = SidekiqReader(fake_redis).dashboard(days=days).history
    assert len(history.dates) == len(history.processed) == len(history.failed) == expected


def test_redis_info_real(redis_client):
    info = SidekiqReader(redis_client).redis_info()
    assert info.redis_version == redis_client.info()["redis_version"]
    assert info.used_memory_human.endswith(("K", "M", "G", "B"))
    assert int(info.connected_clients) >= 1
    assert SidekiqReader(redis_client).dashboard().redis.redis_version == info.redis_version


def test_redis_info_falls_back_when_info_is_renamed():
    from conftest import RedisServer

    server = RedisServer(extra_args=("--rename-command", "INFO", "")).start()
    try:
        client = server.client()
        reader = SidekiqReader(client)
        assert reader.redis_info() == sr.RedisInfo(**sr.FAKE_REDIS_INFO)
        assert reader.dashboard().redis.redis_version == "9.9.9"
        assert reader.stats_json()["redis"]["used_memory_human"] == "9P"
        client.close()
    finally:
        server.cleanup()


# ---------------------------------------------------------------------------------------------------------------
# queues


def test_queues_page(r, ns):
    seed_stats(r, ns)
    r.sadd(k(ns, "paused"), "low")
    data = SidekiqReader(r, ns).queues()
    assert data.stats.enqueued == 7
    assert [(q.name, q.size, q.paused) for q in data.queues] == [
        ("default", 2, False), ("empty", 0, False), ("low", 5, True)]
    assert data.queues[0].latency == pytest.approx(30, abs=2)
    assert data.queues[1].latency == 0.0


def seed_queue(client, ns, size, name="default"):
    client.sadd(k(ns, "queues"), name)
    # pushed oldest first with LPUSH, so index 0 (head) is the newest: jid q{size-1}
    client.lpush(k(ns, f"queue:{name}"), *[dumps(job_6x(f"q{i}")) for i in range(size)])


def test_queue_newest_first_pagination(r, ns):
    seed_queue(r, ns, 60)
    reader = SidekiqReader(r, ns)
    first = reader.queue("default", page=1, count=25).jobs
    assert (first.total, first.pages, first.page, first.count) == (60, 3, 1, 25)
    assert [j.job.jid for j in first.items[:2]] == ["q59", "q58"]
    assert [j.index for j in first.items[:2]] == [0, 1]
    assert all(j.job.queue == "default" for j in first.items)
    last = reader.queue("default", page=3, count=25).jobs
    assert [j.job.jid for j in last.items] == [f"q{i}" for i in range(9, -1, -1)]
    assert [j.index for j in last.items] == list(range(50, 60))
    assert reader.queue("default", page=4, count=25).jobs.items == []


def test_queue_ascending_oldest_first(r, ns):
    seed_queue(r, ns, 60)
    reader = SidekiqReader(r, ns)
    first = reader.queue("default", page=1, count=25, ascending=True).jobs
    assert [j.job.jid for j in first.items[:3]] == ["q0", "q1", "q2"]
    assert [j.index for j in first.items[:3]] == [59, 58, 57]
    last = reader.queue("default", page=3, count=25, ascending=True).jobs
    assert [j.job.jid for j in last.items] == [f"q{i}" for i in range(50, 60)]
    assert [j.index for j in last.items] == list(range(9, -1, -1))
    assert reader.queue("default", page=9, count=25, ascending=True).jobs.items == []


def test_queue_count_and_page_clamped(fake_redis):
    seed_queue(fake_redis, None, 1200)
    jobs = SidekiqReader(fake_redis).queue("default", page=0, count=5000).jobs
    assert jobs.page == 1 and jobs.count == 1000 and len(jobs.items) == 1000 and jobs.total == 1200
    jobs = SidekiqReader(fake_redis).queue("default", page="x", count=-3).jobs
    assert jobs.page == 1 and jobs.count == 1 and len(jobs.items) == 1


def test_queue_paused_and_invalid_members(r):
    r.sadd("paused", "default")
    r.lpush("queue:default", b"\xff\xfe not json", dumps(job_8x("ok")))
    data = SidekiqReader(r).queue("default")
    assert data.paused is True and data.name == "default"
    assert [j.job.valid for j in data.jobs.items] == [True, False]
    assert data.jobs.items[1].job.raw_bytes == b"\xff\xfe not json"


# ---------------------------------------------------------------------------------------------------------------
# sorted sets


def seed_set(client, ns, name, size, base=1700000000.0):
    client.zadd(k(ns, name), {dumps(job_6x(f"{name}{i}", error_class="E", error_message=f"m{i}")): base + i * 1.5
                              for i in range(size)})


def test_retry_and_schedule_ascending(r, ns):
    seed_set(r, ns, "retry", 30)
    data = SidekiqReader(r, ns).sorted_set("retry", page=2, count=10)
    assert data.name == "retry" and data.substr is None and data.stats.retries == 30
    assert [e.job.jid for e in data.entries.items] == [f"retry{i}" for i in range(10, 20)]
    assert [e.score for e in data.entries.items] == [1700000000.0 + i * 1.5 for i in range(10, 20)]
    assert data.entries.items[0].key == "1700000015.0-retry10"
    assert data.entries.items[0].at == dt.datetime(2023, 11, 14, 22, 13, 35, tzinfo=UTC)
    assert all(e.set_name == "retry" for e in data.entries.items)
    assert data.entries.total == 30 and data.entries.pages == 3
    seed_set(r, ns, "schedule", 3)
    assert [e.job.jid for e in SidekiqReader(r, ns).sorted_set("schedule").entries.items] == [
        "schedule0", "schedule1", "schedule2"]


def test_dead_descending(r, ns):
    seed_set(r, ns, "dead", 30)
    reader = SidekiqReader(r, ns)
    assert [e.job.jid for e in reader.sorted_set("dead", count=3).entries.items] == ["dead29", "dead28", "dead27"]
    last = reader.sorted_set("dead", page=4, count=8).entries
    assert [e.job.jid for e in last.items] == ["dead5", "dead4", "dead3", "dead2", "dead1", "dead0"]
    assert reader.sorted_set("dead", page=5, count=8).entries.items == []


def test_sorted_set_rejects_unknown_name(fake_redis):
    with pytest.raises(ValueError):
        SidekiqReader(fake_redis).sorted_set("queues")  # type: ignore[arg-type]


def test_entry_by_key_checks_jid(r, ns):
    score = 1700000000.123456
    r.zadd(k(ns, "retry"), {dumps(job_6x("aaa")): score, dumps(job_6x("bbb")): score, dumps(job_6x("ccc")): 5.0})
    reader = SidekiqReader(r, ns)
    data = reader.entry("retry", entry_key(score, "bbb"))
    assert data.stats.retries == 3
    assert data.entry is not None and data.entry.job.jid == "bbb" and data.entry.score == score
    assert data.entry.key == "1700000000.123456-bbb"
    # the lone member at 5.0 is another job: not returned (Sidekiq's remove_job would take it)
    assert reader.entry("retry", "5.0-zzz").entry is None
    assert reader.entry("retry", "garbage").entry is None
    assert reader.entry("retry", "garbage").stats.retries == 3
    assert reader.find_entry("retry", "5.0-ccc").job.jid == "ccc"
    assert reader.find_entry("dead", "5.0-ccc") is None
    assert reader.find_entry("retry", "nope") is None


def test_every_listed_key_finds_its_entry(r):
    scores = [1700000000.1 + i / 7 for i in range(40)] + [0.1 + 0.2, 1e-7, 123456789.98765432]
    r.zadd("dead", {dumps(job_6x(f"j{i}")): s for i, s in enumerate(scores)})
    reader = SidekiqReader(r)
    for entry in reader.sorted_set("dead", count=100).entries.items:
        found = reader.find_entry("dead", entry.key)
        assert found is not None and found.job.jid == entry.job.jid and found.score == entry.score


def test_search_substring_sorted_and_paginated(r, ns):
    members = {dumps(job_6x(f"job{i}", args=["needle" if i % 3 == 0 else "hay"])): 1000.0 + i for i in range(300)}
    r.zadd(k(ns, "retry"), members)
    reader = SidekiqReader(r, ns)
    data = reader.sorted_set("retry", substr="needle", count=20)
    assert data.substr == "needle" and data.truncated is False
    assert data.entries.total == 100
    assert [e.job.jid for e in data.entries.items] == [f"job{i}" for i in range(0, 60, 3)]
    page5 = reader.sorted_set("retry", substr="needle", count=20, page=5).entries
    assert [e.job.jid for e in page5.items] == [f"job{i}" for i in range(240, 300, 3)]
    assert reader.sorted_set("retry", substr="needle", count=20, page=6).entries.items == []
    r.zadd(k(ns, "dead"), {dumps(job_6x(f"d{i}", args=["needle"])): 10.0 + i for i in range(5)})
    assert [e.job.jid for e in reader.sorted_set("dead", substr="needle").entries.items] == [
        "d4", "d3", "d2", "d1", "d0"]


def test_search_escapes_glob_characters(r):
    r.zadd("retry", {dumps(job_6x("star", args=["a*b"])): 1.0, dumps(job_6x("plain", args=["aXXb"])): 2.0,
                     dumps(job_6x("q", args=["a?b[c]"])): 3.0})
    reader = SidekiqReader(r)
    assert [e.job.jid for e in reader.sorted_set("retry", substr="a*b").entries.items] == ["star"]
    assert [e.job.jid for e in reader.sorted_set("retry", substr="a?b[c]").entries.items] == ["q"]
    assert reader.sorted_set("retry", substr="nothing-here").entries.total == 0


def test_search_is_bounded(r, monkeypatch):
    r.zadd("retry", {dumps(job_6x(f"j{i}", args=["needle"])): float(i) for i in range(2000)})
    monkeypatch.setattr(sr, "SEARCH_SCAN_LIMIT", 100)
    monkeypatch.setattr(sr, "SEARCH_SCAN_STEP", 50)
    data = SidekiqReader(r).sorted_set("retry", substr="needle", count=1000)
    assert data.truncated is True
    assert 0 < data.entries.total < 2000


def test_search_over_many_chunks_finds_everything_once(r, monkeypatch):
    r.zadd("dead", {dumps(job_6x(f"j{i}", args=["needle" if i % 2 else "hay"])): float(i) for i in range(600)})
    monkeypatch.setattr(sr, "SEARCH_STEPS_PER_CALL", 1)
    monkeypatch.setattr(sr, "SEARCH_SCAN_STEP", 20)
    data = SidekiqReader(r).sorted_set("dead", substr="needle", count=1000)
    assert data.truncated is False
    assert [e.job.jid for e in data.entries.items] == [f"j{i}" for i in range(599, 0, -2)]
    monkeypatch.setattr(sr, "SEARCH_MATCH_LIMIT", 10)
    data = SidekiqReader(r).sorted_set("dead", substr="needle", count=1000)
    assert data.truncated is True and data.entries.total == 10


def test_search_jid_across_sets(r, ns):
    r.zadd(k(ns, "retry"), {dumps(job_6x("abc123")): 1.0, dumps(job_6x("zzz", args=["abc123"])): 2.0})
    r.zadd(k(ns, "schedule"), {dumps(job_6x("sch-abc123x")): 1.0})
    r.zadd(k(ns, "dead"), {dumps(job_6x("other")): 1.0})
    reader = SidekiqReader(r, ns)
    found = reader.search_jid("abc123")
    assert [(e.set_name, e.job.jid) for e in found] == [("retry", "abc123"), ("retry", "zzz"),
                                                       ("schedule", "sch-abc123x")]
    assert len(reader.search_jid("abc123", limit=1)) == 1
    assert reader.search_jid("") == []


# ---------------------------------------------------------------------------------------------------------------
# busy


def test_busy_processes_and_work(r, ns):
    info_6 = {"hostname": "web.1", "pid": 11, "tag": "myapp", "labels": ["reliable"], "concurrency": 5,
              "queues": ["default", "low"], "started_at": 1700000000.5, "identity": "web.1:11:aaa"}
    info_8 = {"hostname": "worker.1", "pid": 22, "concurrency": 9, "started_at": 1700000000.0, "version": "8.1.7",
              "embedded": False, "weights": {"critical": 2},
              "capsules": {"default": {"mode": "weighted", "concurrency": 9, "weights": {"critical": 2, "low": 1}}}}
    seed_process(r, ns, "web.1:11:aaa", info=info_6, busy="2", beat=1700000100.25, quiet="true", rss=123456,
                 rtt=789, workers={"tid-old": work_entry(dumps(job_6x("w2")), 1700000050)},
                 work={"tid-new": work_entry(dumps(job_6x("w1")), 1700000040)})
    seed_process(r, ns, "worker.1:22:bbb", info=info_8, busy="1", quiet="stopping", concurrency=12,
                 work={"tid-8": work_entry(job_8x("w3"), 1700000045, queue="critical")})
    seed_process(r, ns, "gone:33:ccc", alive=False)
    r.set(k(ns, "dear-leader"), "web.1:11:aaa")

    data = SidekiqReader(r, ns).busy()
    assert data.leader == "web.1:11:aaa"
    assert data.stats.busy == 3 and data.stats.processes == 3
    by_id = {p.identity: p for p in data.processes}
    assert [p.identity for p in data.processes] == sorted(by_id)
    web = by_id["web.1:11:aaa"]
    assert (web.hostname, web.pid, web.tag, web.labels, web.queues) == ("web.1", 11, "myapp", ["reliable"],
                                                                        ["default", "low"])
    assert (web.concurrency, web.busy, web.quiet, web.stopping, web.rss_kb, web.rtt_us) == (5, 2, True, False,
                                                                                            123456, 789)
    assert web.beat == dt.datetime(2023, 11, 14, 22, 15, 0, 250000, tzinfo=UTC)
    assert web.started_at == dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)
    assert web.alive and web.embedded is False and web.version is None
    worker = by_id["worker.1:22:bbb"]
    assert worker.concurrency == 12  # the 8.1.2+ hash field wins over info
    assert worker.queues == ["critical", "low"] and worker.capsules == info_8["capsules"]
    assert worker.weights == {"critical": 2}
    assert worker.version == "8.1.7" and worker.quiet and worker.stopping
    assert worker.rss_kb is None and worker.rtt_us is None
    gone = by_id["gone:33:ccc"]
    assert gone.alive is False and gone.hostname == "gone" and gone.busy == 0

    work = data.work
    assert work.total == 3
    assert [(w.tid, w.job.jid) for w in work.items] == [("tid-new", "w1"), ("tid-8", "w3"), ("tid-old", "w2")]
    first = work.items[0]
    assert first.identity == "web.1:11:aaa" and first.queue == "default"
    assert first.run_at == dt.datetime(2023, 11, 14, 22, 14, tzinfo=UTC)
    assert work.items[1].queue == "critical" and work.items[1].job.klass == "HardWorker"
    assert work.items[1].job.timestamps_in_ms is True  # 5.x-style object payload, 8.x timestamps


def test_busy_reads_both_work_hash_names_and_skips_gone_processes(r):
    seed_process(r, None, "a:1:x", workers={"t1": work_entry(dumps(job_6x("old-style")), 10)})
    seed_process(r, None, "b:2:y", work={"t2": work_entry(dumps(job_6x("new-style")), 20)})
    seed_process(r, None, "c:3:z", alive=False, work={"t3": work_entry(dumps(job_6x("stale")), 5)})
    data = SidekiqReader(r).busy()
    assert [w.job.jid for w in data.work.items] == ["old-style", "new-style"]


def test_busy_pagination(r):
    seed_process(r, None, "a:1:x", work={f"t{i:03}": work_entry(dumps(job_6x(f"j{i}")), 1000 + i)
                                         for i in range(250)})
    reader = SidekiqReader(r)
    page = reader.busy(page=2, count=100).work
    assert (page.total, page.pages, page.page, page.count) == (250, 3, 2, 100)
    assert [w.job.jid for w in page.items] == [f"j{i}" for i in range(100, 200)]
    assert [w.job.jid for w in reader.busy(page=3, count=100).work.items] == [f"j{i}" for i in range(200, 250)]
    assert reader.busy(page=4, count=100).work.items == []


def test_busy_5000_running_jobs_returns_only_the_page(redis_client):
    payload = dumps(job_6x(args=["x" * 200]))
    for p in range(50):
        seed_process(redis_client, None, f"host{p}:{p}:abc",
                     work={f"tid{t}": work_entry(payload, 1700000000 + (p * 100 + t) % 997) for t in range(100)})
    reader = SidekiqReader(redis_client)
    data = reader.busy(page=3, count=100)
    assert data.work.total == 5000 and len(data.work.items) == 100 and len(data.processes) == 50
    run_ats = [w.run_at for w in data.work.items]
    assert run_ats == sorted(run_ats)


def test_busy_hostile_work_entries(r):
    seed_process(r, None, "a:1:x", work={
        "t1": "not json",
        "t2": dumps({"queue": "q", "payload": "{broken", "run_at": 5}),
        "t3": dumps({"queue": "q", "payload": 42, "run_at": "soon"}),
        "t4": dumps([1, 2]),
    })
    r.hset("a:1:x", "info", "{not json")
    data = SidekiqReader(r).busy()
    assert data.work.total == 4
    assert {w.tid for w in data.work.items} == {"t1", "t2", "t3", "t4"}
    broken = {w.tid: w for w in data.work.items}
    assert broken["t1"].job.valid is False and broken["t1"].job.raw == "not json"
    assert broken["t2"].job.valid is False and broken["t2"].queue == "q"
    assert broken["t3"].run_at is None
    assert data.processes[0].alive is True and data.processes[0].info == {}


# ---------------------------------------------------------------------------------------------------------------
# robustness: wrong types, no writes, decode_responses, round trips


def test_wrong_type_keys_do_not_break_pages(r, ns):
    r.hset(k(ns, "queue:default"), "x", "1")
    r.set(k(ns, "retry"), "i am a string")
    r.lpush(k(ns, "dead"), "a list")
    r.hset(k(ns, "stat:processed"), "x", "1")
    r.set(k(ns, "stat:failed"), "12abc")
    r.sadd(k(ns, "queues"), "default", "fine")
    r.lpush(k(ns, "queue:fine"), dumps(job_6x()))
    r.set(k(ns, "processes"), "not a set")
    r.zadd(k(ns, "paused"), {"x": 1})
    reader = SidekiqReader(r, ns)
    stats = reader.stats()
    assert (stats.processed, stats.failed, stats.retries, stats.dead, stats.processes, stats.enqueued) == (
        0, 12, 0, 0, 0, 1)
    assert stats.default_latency == 0.0
    assert reader.sorted_set("retry").entries.total == 0
    assert reader.sorted_set("retry", substr="x").entries.total == 0
    assert reader.sorted_set("dead").entries.items == []
    assert reader.queue("default").jobs.total == 0
    assert [(q.name, q.size, q.paused) for q in reader.queues().queues] == [("default", 0, False), ("fine", 1, False)]
    assert reader.busy().processes == []
    assert reader.entry("retry", "1.0-x").entry is None
    assert reader.search_jid("x") == []
    assert reader.dashboard(2).stats == stats


def test_wrong_type_process_keys(r):
    r.sadd("processes", "a:1:x", "b:2:y")
    r.set("a:1:x", "string, not hash")
    r.hset("b:2:y", mapping={"info": dumps({"hostname": "b"}), "busy": "many"})
    r.set("b:2:y:work", "string")
    data = SidekiqReader(r).busy()
    assert [p.alive for p in data.processes] == [False, True]
    assert data.stats.busy == 0 and data.work.total == 0


def test_reads_never_write(r, ns):
    seed_stats(r, ns)
    seed_set(r, ns, "retry", 20)
    seed_process(r, ns, "w:1:x", work={"t": work_entry(dumps(job_6x()), 1)})
    r.hset(k(ns, "queue:bad"), "a", "b")
    before = snapshot(r)
    reader = SidekiqReader(r, ns)
    reader.stats(), reader.stats_json(), reader.queue_sizes(), reader.dashboard(7), reader.busy(), reader.queues()
    reader.queue("default"), reader.queue("bad", ascending=True), reader.sorted_set("retry", substr="retry1")
    reader.sorted_set("dead"), reader.entry("retry", "1700000000.0-retry0"), reader.search_jid("retry")
    assert snapshot(r) == before
    assert r.scard(k(ns, "processes")) == 4  # the gone process was not pruned


def test_decode_responses_true_client(redis_server):
    client = redis_server.client(decode_responses=True)
    client.flushall()
    bytes_client = redis_server.client()
    bytes_client.zadd("retry", {b'{"class":"X","jid":"j1","args":["\xff"]}': 1.5})
    bytes_client.lpush("queue:default", b"\xc3\x28 raw")
    bytes_client.sadd("queues", "default")
    reader = SidekiqReader(client, None)
    entry = reader.sorted_set("retry").entries.items[0]
    assert entry.job.jid == "j1" and entry.job.raw_bytes == b'{"class":"X","jid":"j1","args":["\xff"]}'
    assert reader.queue("default").jobs.items[0].job.raw_bytes == b"\xc3\x28 raw"
    assert reader.find_entry("retry", entry.key).job.jid == "j1"
    assert reader.stats().enqueued == 1
    client.close()
    bytes_client.close()


@pytest.fixture
def round_trips(monkeypatch):
    """Counts packed sends: a pipeline or a single command is one send, i.e. one round trip."""
    counter = {"n": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        counter["n"] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return counter


def test_every_page_in_at_most_two_round_trips(redis_client, round_trips):
    seed_stats(redis_client, None)
    seed_set(redis_client, None, "retry", 50)
    redis_client.script_flush()
    reader = SidekiqReader(redis_client)
    calls = {
        "dashboard": lambda: reader.dashboard(180),
        "busy": lambda: reader.busy(),
        "queues": lambda: reader.queues(),
        "queue": lambda: reader.queue("low", ascending=True),
        "sorted_set": lambda: reader.sorted_set("retry", page=3, count=10),
        "search": lambda: reader.sorted_set("retry", substr="retry4"),
        "entry": lambda: reader.entry("retry", "1700000001.5-retry1"),
        "stats_json": lambda: reader.stats_json(),
        "search_jid": lambda: reader.search_jid("retry1"),
    }
    cold = {}
    for name, call in calls.items():
        redis_client.script_flush()
        round_trips["n"] = 0
        call()
        cold[name] = round_trips["n"]
    warm = {}
    for name, call in calls.items():
        round_trips["n"] = 0
        call()
        warm[name] = round_trips["n"]
    # script_flush itself is not counted: it runs before the reset
    assert all(n <= 2 for n in cold.values()), cold
    assert all(n == 1 for n in warm.values()), warm
