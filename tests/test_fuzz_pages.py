"""Hostile data and hostile requests: every page of a pool stays up (no 5xx) and never echoes markup unescaped.

Hypothesis fills a real redis-server with random Sidekiq-shaped and broken entries — wrong types for every field,
non-UTF-8 bytes, deep nesting, huge strings, NaN/Infinity, keys of the wrong Redis type (`queue:x` a hash, `retry` a
string, `processes` a list, …), HTML/JS in every string field (queue names, classes, args, errors, backtraces,
process hostnames/tags/labels) — then renders every page of the pool, each job page, the overview, /api/pools,
/metrics and /search. Bounded (max_examples below, deadline=None) so the module stays well under a minute.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import zlib
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app as app_module
from config import load_settings
from sidekiq_reader import entry_key
from tests.auth_support import csrf_post
from tests.conftest import RedisServer
from tests.faults_support import GITHUB_ENV, signed_in_client

EXAMPLES = int(os.environ.get("KIQBOARD_FUZZ_EXAMPLES", "40"))  # bench: raise it for a long run
POOL = "fz"

# Each payload carries a marker that must never reach a page as live markup.
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg/onload=alert(3)>",
    "</textarea></pre></title><script>alert(4)</script>",
    "<a href=\"javascript:alert(5)\">x</a>",
    "{{7*7}}<iframe srcdoc=alert(6)>",
    "\"onmouseover=\"alert(7)",
]
MARKERS = ["<script>alert", "<img src=x", "<svg/onload", "<a href=\"javascript:", "<iframe srcdoc", "\"onmouseover=\"alert"]
FIELDS = ["class", "args", "jid", "queue", "created_at", "enqueued_at", "failed_at", "retried_at", "retry_count",
          "error_class", "error_message", "error_backtrace", "tags", "bid", "wrapped", "retry", "at", "backtrace"]

hostile_text = st.one_of(
    st.sampled_from(XSS),
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(XSS), st.text(max_size=10)),
    st.just("x" * 200_000),  # huge
    st.just("\u202e\u0000\ufffd\ud7ff"),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text,
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(hostile_text, inner, max_size=4)),
                           max_leaves=12)


def deep(n: int = 5000) -> str:
    return "[" * n + "]" * n


def compressed_backtrace(lines) -> str:
    return base64.b64encode(zlib.compress(json.dumps(lines).encode())).decode()


field_value = st.one_of(
    json_values,
    st.sampled_from(XSS),
    st.lists(st.sampled_from(XSS), max_size=3),
    st.builds(compressed_backtrace, st.lists(hostile_text, max_size=3)),
    st.just("bm90IHpsaWI="),  # base64, not zlib
    st.builds(lambda: {"_aj_globalid": "<script>alert(1)</script>"}),
)


@st.composite
def job_payload(draw) -> bytes:
    """One member of a list or sorted set: a Sidekiq-ish job, or something that only looks like one."""
    kind = draw(st.sampled_from(["job", "job", "job", "json", "bytes", "deep", "truncated", "activejob"]))
    if kind == "bytes":
        return draw(st.binary(min_size=0, max_size=64)) + b"\xff\xfe\x80"
    if kind == "deep":
        return deep().encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    item = {"class": draw(st.sampled_from(["HardWorker", *XSS])), "args": [1], "jid": draw(st.sampled_from(
        ["abcdef0123456789abcdef01", "<script>alert(1)</script>", "j" + str(draw(st.integers(0, 999)))]))}
    if kind == "activejob":
        item.update({"class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
                     "wrapped": draw(st.sampled_from(XSS)),
                     "args": [{"job_class": draw(st.sampled_from(XSS)), "arguments": [draw(st.sampled_from(XSS))]}]})
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique=True)):
        item[field] = draw(field_value)
    for _ in range(draw(st.integers(0, 2))):
        item[draw(st.sampled_from(XSS))] = draw(field_value)  # unknown keys shown in "extras"
    text = json.dumps(item, allow_nan=True)  # NaN/Infinity are not JSON: Sidekiq's parser would refuse them too
    if kind == "truncated":
        text = text[: max(1, len(text) // 2)]
    return text.encode()


scores = st.one_of(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
                   st.sampled_from([0.0, time.time(), 1e300, -1e300, float("inf"), float("-inf")]))


@st.composite
def keyspace(draw) -> dict:
    queue_names = draw(st.lists(st.one_of(st.sampled_from(["default", "critical", *XSS]), hostile_text),
                                min_size=1, max_size=4, unique=True))
    queue_names = [q for q in queue_names if len(q) < 1000]
    return {
        "queues": {q: draw(st.lists(job_payload(), max_size=3)) for q in queue_names},
        "sets": {name: draw(st.lists(st.tuples(job_payload(), scores), max_size=4))
                 for name in ("retry", "schedule", "dead")},
        "processes": draw(st.lists(st.tuples(hostile_text, json_values, st.dictionaries(
            st.sampled_from(["hostname", "tag", "labels", "queues", "concurrency", "pid", "started_at", "version",
                             "identity", "weights", "capsules", "embedded"]), field_value, max_size=8),
            st.one_of(st.integers(-5, 10**20), hostile_text), st.lists(st.tuples(hostile_text, job_payload(),
                                                                                json_values), max_size=2)),
            max_size=3)),
        "wrong_types": draw(st.lists(st.sampled_from(WRONG_TYPES), max_size=4, unique=True)),
        "stats": draw(st.dictionaries(st.sampled_from(["stat:processed", "stat:failed", f"stat:processed:{TODAY}",
                                                       f"stat:failed:{TODAY}"]),
                                      st.one_of(hostile_text, st.integers(-(2**63), 2**63 - 1),
                                                st.just("1e400"), st.just("nan")), max_size=4)),
    }


TODAY = time.strftime("%Y-%m-%d", time.gmtime())
WRONG_TYPES = [
    ("queue:default", "hash"), ("queue:critical", "zset"), ("retry", "string"), ("schedule", "list"),
    ("dead", "hash"), ("processes", "list"), ("queues", "string"), ("stat:processed", "list"),
    ("stat:failed", "hash"), (f"stat:processed:{TODAY}", "set"), ("queue:x", "hash"), ("dear-leader", "list"),
]


def write_wrong_type(r, key: str, kind: str) -> None:
    r.delete(key)
    payload = XSS[0]
    if kind == "hash":
        r.hset(key, mapping={payload: payload, "a": "b"})
    elif kind == "zset":
        r.zadd(key, {payload: 1})
    elif kind == "string":
        r.set(key, payload)
    elif kind == "list":
        r.rpush(key, payload, "x")
    elif kind == "set":
        r.sadd(key, payload)


def write(r, data: dict) -> dict:
    """Write the keyspace; return what the pages need to visit (queue names, set keys, search words)."""
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for queue, jobs in data["queues"].items():
        pipe.sadd("queues", queue)
        for job in jobs:
            pipe.lpush(f"queue:{queue}", job)
    set_keys: dict[str, list[str]] = {"retry": [], "schedule": [], "dead": []}
    for name, members in data["sets"].items():
        for member, score in members:
            pipe.zadd(name, {member: score})
            try:
                jid = json.loads(member)["jid"]
            except Exception:  # noqa: BLE001
                jid = "nojid"
            if math.isfinite(score):
                set_keys[name].append(entry_key(float(score), str(jid)))
            set_keys[name].append(f"{score!r}-{jid}")
    for identity, info, fields, busy, work in data["processes"]:
        pipe.sadd("processes", identity)
        mapping = {"info": json.dumps(info if not isinstance(info, dict) else {**info, **fields}, allow_nan=True),
                   "busy": str(busy), "beat": str(time.time()), "quiet": "<script>alert(1)</script>"}
        if isinstance(info, str) and info.startswith("<"):
            mapping["info"] = info
        pipe.hset(identity, mapping=mapping)
        for tid, payload, extra in work:
            pipe.hset(f"{identity}:work", tid or "t", json.dumps(
                {"queue": tid, "run_at": extra if not isinstance(extra, str) else time.time(),
                 "payload": payload.decode("utf-8", "replace")}, allow_nan=True))
        if work and isinstance(extra, str):
            pipe.hset(f"{identity}:work", "raw", payload)
    for key, value in data["stats"].items():
        pipe.set(key, value)
    pipe.execute()
    for key, kind in data["wrong_types"]:
        write_wrong_type(r, key, kind)
    return {"queues": list(data["queues"]), "set_keys": set_keys}


def assert_safe(response, path: str) -> None:
    assert response.status_code < 500, (path, response.status_code, response.get_data(as_text=True)[:2000])
    if response.mimetype == "text/html":
        body = response.get_data(as_text=True)
        for marker in MARKERS:
            assert marker not in body, (path, marker, body[max(0, body.find(marker) - 300): body.find(marker) + 200])
    elif response.status_code == 200:
        assert response.mimetype in ("application/json", "text/plain", "application/x-ndjson",
                                     "application/openmetrics-text"), (path, response.mimetype)


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def kiq_app(server):
    env = {"REDIS_1": server.url, "REDIS_1_NAME": POOL, "REDIS_SOCKET_TIMEOUT": "5", **GITHUB_ENV}
    application = app_module.create_app(load_settings(env))
    application.config.update(TESTING=True, KIQBOARD_OVERVIEW_DEADLINE=5.0)
    return application


@pytest.fixture(scope="module")
def client(kiq_app):
    return signed_in_client(kiq_app, "octocat")


PAGES = ["/", "/?days=180", "/busy", "/busy?count=1000", "/queues", "/retries", "/scheduled", "/morgue",
         "/retries?substr=%3Cscript%3E", "/morgue?substr=alert", "/stats", "/stats/queues", "/dashboard/stats"]
GLOBAL = ["/", "/api/pools", "/metrics", "/search?q=abc", "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
          "/search?q=j1"]
SET_PAGES = {"retry": "retries", "schedule": "scheduled", "dead": "morgue"}


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(data=keyspace())
def test_every_page_survives_hostile_data(server, kiq_app, client, data):
    r = server.client()
    visit = write(r, data)
    kiq_app.extensions["kiqboard"]["pools"][POOL].breaker.record_success()
    paths = [f"/{POOL}{p}" for p in PAGES] + GLOBAL
    for queue in visit["queues"]:
        paths += [f"/{POOL}/queues/{quote(queue, safe='')}", f"/{POOL}/queues/{quote(queue, safe='')}?direction=asc"]
    for name, keys in visit["set_keys"].items():
        paths += [f"/{POOL}/{SET_PAGES[name]}/{quote(key, safe='')}" for key in keys[:4]]
    for path in paths:
        assert_safe(client.get(path), path)
    r.close()


HOSTILE_REQUESTS = [
    "/retries/garbage", "/retries/1.0-", "/retries/-abc", "/retries/1e309-abc", "/retries/nan-abc",
    "/retries/inf-abc", "/retries/-inf-abc", "/retries/1.7976931348623157e308-x", "/morgue/%00-%00",
    "/scheduled/" + "9" * 5000 + "-x", "/retries/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "/retries?page=" + "9" * 30, "/retries?page=-5", "/retries?page=nan", "/retries?count=-5",
    "/retries?count=" + "9" * 30, "/retries?count=abc", "/queues/default?page=" + "9" * 30,
    "/queues/default?count=0", "/busy?page=" + "9" * 30 + "&count=-1", "/?days=abc", "/?days=0", "/?days=181",
    "/?days=" + "9" * 30, "/?days=-1", "/?days=1e3", "/queues/%3Cscript%3E", "/queues/a%00b", "/queues/..%2F..",
    "/queues/" + "q" * 5000, "/retries?substr=" + "%" * 3 + "x" * 10_000, "/morgue?substr=*[\\",
    "/retries?" + "a=b&" * 5000, "/stats?" + "x" * 50_000,
]


@pytest.mark.parametrize("path", HOSTILE_REQUESTS, ids=lambda p: p[:60])
def test_hostile_requests_are_answered_without_5xx(server, client, path):
    server.client().flushall()
    assert_safe(client.get(f"/{POOL}{path}"), path)


@pytest.mark.parametrize("path", ["/nope/", "/nope/retries", "/<script>/", "/" + "p" * 5000 + "/stats",
                                  "/search?q=" + "x" * 100_000, "/api/pools?" + "z" * 50_000, "/fz/../../etc/passwd"])
def test_unknown_pools_and_odd_paths(client, path):
    response = client.get(path)
    assert_safe(response, path)
    if path.startswith(("/nope", "/<script>", "/pppp")):
        assert response.status_code == 404


@pytest.mark.parametrize("path,data", [
    ("/retries/garbage", {"retry": "Retry Now"}),
    ("/retries/nan-x", {"kill": "Kill"}),
    ("/scheduled/1e309-x", {"add_to_queue": "Add"}),
    ("/morgue/-inf-x", {"delete": "Delete"}),
    ("/retries", {"key[]": ["garbage", "1.0-", "nan-x", "9" * 400 + "-x"], "retry": "Retry"}),
    ("/queues/%3Cscript%3E/delete", {"key_val": "<script>alert(1)</script>"}),
    ("/queues/default/delete", {"key_val": "\ufffd\u0000\u202e"}),
    ("/busy", {"identity": "<script>alert(1)</script>", "quiet": "1"}),
])
def test_hostile_actions_are_answered_without_5xx(server, client, path, data):
    server.client().flushall()
    response = csrf_post(client, f"/{POOL}{path}", data=data)
    assert_safe(response, path)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=60), page=st.text(max_size=12), count=st.text(max_size=12),
       where=st.sampled_from(["retries", "scheduled", "morgue"]))
def test_random_keys_and_parameters(server, client, key, page, count, where):
    for path, query in ((f"/{POOL}/{where}/{quote(key, safe='')}", {}),
                        (f"/{POOL}/{where}", {"page": page, "count": count, "substr": key}),
                        (f"/{POOL}/", {"days": page})):
        if not key and path.endswith("/"):
            pass
        assert_safe(client.get(path, query_string=query), path)


def test_a_huge_running_job_does_not_block_redis(server, client):
    """Regression: the busy page's Lua looked for run_at with an unanchored '.*' pattern — quadratic in the size
    of the work entry, so one running job with ~200 KB of args blocked the app's Redis for minutes."""
    r = server.client()
    r.flushall()
    r.sadd("processes", "host:1:abc")
    r.hset("host:1:abc", mapping={"info": json.dumps({"hostname": "host", "concurrency": 1}), "busy": "1",
                                  "beat": str(time.time())})
    r.hset("host:1:abc:work", "tid", json.dumps({"payload": json.dumps({"class": "Big", "args": ["x" * 300_000]}),
                                                 "queue": "default"}))
    assert_safe(client.get(f"/{POOL}/busy"), "/busy")
    assert client.get(f"/{POOL}/busy").status_code == 200
