"""The pool dashboard through the Flask test client, on a real redis-server, signed in through the fake GitHub.

Data is Sidekiq-shaped JSON written the way Sidekiq 6.4 writes it (LPUSH queue:Q + SADD queues; ZADD retry/schedule/
dead with score = epoch seconds; processes + identity hashes + identity:workers), plus one module-level test with
data written by real Sidekiq (tests/ruby/seed.rb) when Ruby is available.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import zlib
from html import unescape

import pytest

from app import create_app
from sidekiq_reader import entry_key
from tests.auth_support import (  # noqa: F401  (fixtures)
    csrf_post,
    csrf_token,
    fake_github,
    fake_github_server,
    make_settings,
    pool_settings,
    sign_in,
)

OPS = "acme/ops"
HOSTILE = '<script>alert("x")</script>'
HOSTILE_ESCAPED = "&lt;script&gt;alert("


# ----------------------------------------------------------------------------------------------- seeding


def jid(n: int) -> str:
    return f"{n:024x}"


def job(n: int, klass: str = "HardWorker", queue: str = "default", args=None, **extra) -> dict:
    now = time.time()
    payload = {
        "class": klass, "args": args if args is not None else [n, f"arg-{n}"], "retry": True, "queue": queue,
        "jid": jid(n), "created_at": now - 3600, "enqueued_at": now - 600,
    }
    payload.update(extra)
    return payload


def failed(n: int, error_class="RuntimeError", message="boom", retry_count=0, backtrace=None, **extra) -> dict:
    payload = job(n, **extra)
    payload.update(error_class=error_class, error_message=message, failed_at=time.time() - 1800,
                   retry_count=retry_count)
    if retry_count:
        payload["retried_at"] = time.time() - 60
    if backtrace is not None:
        payload["error_backtrace"] = base64.encodebytes(zlib.compress(json.dumps(backtrace).encode())).decode()
    return payload


def push(client, payload: dict) -> None:
    client.sadd("queues", payload["queue"])
    client.lpush(f"queue:{payload['queue']}", json.dumps(payload))


def zadd(client, set_name: str, payload: dict, score: float) -> str:
    client.zadd(set_name, {json.dumps(payload): score})
    stored = client.zscore(set_name, json.dumps(payload))
    return entry_key(float(stored), payload["jid"])


def add_process(client, identity="worker-1:4242:abcdef012345", busy=1, quiet=False, tag="storefront",
                labels=("heroku",), queues=("default", "critical"), work=None) -> str:
    hostname, pid, _ = identity.split(":")
    info = {"hostname": hostname, "started_at": time.time() - 7200, "pid": int(pid), "tag": tag,
            "concurrency": 10, "queues": list(queues), "labels": list(labels), "identity": identity}
    client.sadd("processes", identity)
    client.hset(identity, mapping={"info": json.dumps(info), "busy": busy, "beat": time.time(),
                                   "quiet": "true" if quiet else "false", "rss": 204800, "rtt_us": 300})
    client.expire(identity, 60)
    for tid, payload in (work or {}).items():
        client.hset(f"{identity}:workers", tid, json.dumps(
            {"queue": payload["queue"], "payload": json.dumps(payload), "run_at": int(time.time()) - 5}))
    return identity


def seed(client) -> dict:
    """A bit of everything; returns the keys."""
    now = time.time()
    client.set("stat:processed", 1234567)
    client.set("stat:failed", 8910)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    client.set(f"stat:processed:{today}", 4321)
    client.set(f"stat:failed:{today}", 21)
    for n in range(1, 4):
        push(client, job(n))
    push(client, job(4, queue="critical", enqueued_at=now - 300))
    push(client, job(5, queue="low", args=["x" * 300]))
    keys = {
        "retry": [zadd(client, "retry", failed(10 + n, message=f"failure {n}", retry_count=n,
                                                  backtrace=[f"app/jobs/hard_worker.rb:{n}:in `perform'",
                                                             "sidekiq/processor.rb:196:in `execute_job'"]),
                       now + 60 * (n + 1)) for n in range(3)],
        "schedule": [zadd(client, "schedule", job(20 + n, args=[f"later-{n}"]), now + 3600 * (n + 1))
                     for n in range(2)],
        "dead": [zadd(client, "dead", failed(30 + n, error_class="Dead::Error", message=f"dead {n}"), now - 60 * n)
                 for n in range(2)],
    }
    add_process(client, work={"tid-abc": job(40, klass="BusyWorker")})
    add_process(client, identity="worker-2:4343:bbbbbbbbbbbb", busy=0, quiet=True, tag=None, labels=())
    return keys


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def app(fake_github, redis_client, redis_server):
    settings = make_settings(fake_github, pools=[
        pool_settings("sidekiq", redis_server.url, number=1),
        pool_settings("sidekiq2", f"redis://127.0.0.1:{redis_server.port}/1", number=2, operators=[OPS]),
        pool_settings("secret", f"redis://127.0.0.1:{redis_server.port}/2", number=3, teams=["acme/secret"]),
    ])
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={OPS: "active"})
    fake_github.set_user("viewer", orgs={"acme": "active"}, teams={})
    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def keys(redis_client):
    return seed(redis_client)


@pytest.fixture
def client(app, fake_github):
    test_client = app.test_client()
    response = sign_in(test_client, app, fake_github, login="octocat")
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return test_client


@pytest.fixture
def viewer(app, fake_github, redis_server):
    test_client = app.test_client()
    assert sign_in(test_client, app, fake_github, login="viewer").status_code == 302
    return test_client


@pytest.fixture
def client2(redis_server):
    """A raw client on pool sidekiq2's database."""
    c = redis_server.client(db=1)
    yield c
    c.close()


def text(response) -> str:
    return response.get_data(as_text=True)


def members(redis_client, key: str) -> list[dict]:
    return [json.loads(m) for m in redis_client.zrange(key, 0, -1)]


def queue_jids(redis_client, queue: str) -> list[str]:
    return [json.loads(m)["jid"] for m in redis_client.lrange(f"queue:{queue}", 0, -1)]


# ----------------------------------------------------------------------------------------------- pages


PAGES = [
    ("/sidekiq/", ["Dashboard", "Processed", "1,234,567", "Failed", "8,910", "History", "Polling interval",
                   "Redis", "Uptime (days)", "Connections", "Memory Usage", "Peak Memory Usage", "1 week", "6 months"]),
    ("/sidekiq/busy", ["Processes", "Threads", "Utilization", "RSS", "worker-1:4242", "storefront", "heroku",
                       "quiet", "Quiet All", "Stop All", "BusyWorker", "tid-abc", jid(40)]),
    ("/sidekiq/queues", ["Queues", "default", "critical", "low", "Size", "Latency", "Delete"]),
    ("/sidekiq/queues/default", ["Current jobs in", "HardWorker", "arg-1", "Newest first", "Oldest first"]),
    ("/sidekiq/retries", ["Retries", "Next Retry", "Retry Count", "Retry Now", "Delete", "Kill", "Retry All",
                          "Delete All", "Kill All", "RuntimeError: failure 1"]),
    ("/sidekiq/scheduled", ["Scheduled Jobs", "When", "Add to queue", "Add All to Queue", "later-0"]),
    ("/sidekiq/morgue", ["Dead Jobs", "Last Retry", "Retry Now", "Retry All", "Dead::Error: dead 0"]),
]


@pytest.mark.parametrize("path,words", PAGES, ids=[p for p, _ in PAGES])
def test_every_page_renders_with_sidekiq_words(client, keys, path, words):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "nonce-" in response.headers["Content-Security-Policy"]
    body = unescape(text(response))
    for word in words:
        assert word in body, word
    # nav in Sidekiq's order with live counts
    nav = re.findall(r'<span class="tab-label">([^<]+)</span>', text(response))
    assert nav == ["Dashboard", "Busy", "Queues", "Retries", "Scheduled", "Dead"]
    assert re.search(r'data-stat="retries">3<', text(response))
    assert re.search(r'data-stat="enqueued">5<', text(response))
    # user, sign out, footer (Redis version + UTC time)
    assert "octocat" in body and "Sign out" in body
    assert re.search(r"Redis <span data-redis=\"redis_version\">\d+\.\d+", text(response))
    assert re.search(r"\d\d:\d\d:\d\d UTC", body)


def test_strict_csp_markup(client, keys):
    for path, _ in PAGES:
        html = text(client.get(path))
        assert " style=" not in html and "<style" not in html, path
        for tag in re.findall(r"<script[^>]*>", html):
            assert " src=\"/static/" in tag and "nonce=" in tag, (path, tag)
        # nothing loaded from elsewhere: scripts, styles, images and icons are /static or data:
        for url in re.findall(r'<(?:script|img|link)[^>]*\b(?:src|href)="([^"]*)"', html):
            assert url.startswith(("/static/", "data:")), (path, url)


def test_head_heartbeat(client, keys):
    assert client.head("/sidekiq/").status_code == 200


def test_pool_switcher_lists_only_visible_pools(client, keys):
    html = text(client.get("/sidekiq/retries"))
    switcher = html.split('id="pool-switcher"')[1].split("</details>")[0]
    assert 'href="/sidekiq/retries"' in switcher and 'href="/sidekiq2/retries"' in switcher
    assert "secret" not in switcher
    assert client.get("/secret/").status_code == 404


def test_stats_json_shapes(client, keys):
    response = client.get("/sidekiq/stats")
    assert response.status_code == 200 and response.is_json
    data = response.get_json()
    assert list(data) == ["sidekiq", "redis", "server_utc_time"]
    assert data["sidekiq"]["processed"] == 1234567 and data["sidekiq"]["retries"] == 3
    assert set(data["sidekiq"]) == {"processed", "failed", "busy", "processes", "enqueued", "scheduled", "retries",
                                    "dead", "default_latency"}
    assert set(data["redis"]) >= {"redis_version", "uptime_in_days", "connected_clients", "used_memory_human",
                                  "used_memory_peak_human"}
    assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", data["server_utc_time"])
    queues = client.get("/sidekiq/stats/queues")
    assert queues.is_json and list(queues.get_json().items()) == [("default", 3), ("critical", 1), ("low", 1)]
    redirect = client.get("/sidekiq/dashboard/stats")
    assert redirect.status_code == 302 and redirect.headers["Location"] == "/sidekiq/stats"


@pytest.mark.parametrize("days,status", [("7", 200), ("1", 200), ("180", 200), ("90abc", 200), ("0", 401),
                                         ("181", 401), ("-5", 401), ("abc", 401), ("9" * 40, 401)])
def test_days_bounded_like_sidekiq(client, keys, days, status):
    assert client.get(f"/sidekiq/?days={days}").status_code == status


def test_history_chart_data(client, keys):
    html = text(client.get("/sidekiq/?days=7"))
    data = json.loads(unescape(re.search(r"data-history='([^']*)'", html).group(1)))
    assert len(data["dates"]) == 7 and data["processed"][-1] == 4321 and data["failed"][-1] == 21
    assert 'aria-current="true">1 week' in html


@pytest.mark.parametrize("query", ["page=abc", "page=-3", "page=0", "page=99999999999999999999999", "count=0",
                                   "count=-1", "count=abc", "count=99999999999999999999", "count=5000&page=2",
                                   "page=1e9", "substr=%00%ff*?[", "direction=sideways"])
def test_bad_page_and_count_never_500(client, keys, query):
    for path in ("/sidekiq/retries", "/sidekiq/scheduled", "/sidekiq/morgue", "/sidekiq/queues/default",
                 "/sidekiq/busy"):
        assert client.get(f"{path}?{query}").status_code == 200, (path, query)


def test_count_is_capped_at_1000(client, redis_client):
    redis_client.zadd("retry", {json.dumps(failed(100000 + n)): 1700000000 + n for n in range(1100)})
    html = text(client.get("/sidekiq/retries?count=5000"))
    assert html.count('name="key[]"') == 1000
    assert "Page 1 of 2" in html


def test_pagination_links(client, redis_client):
    redis_client.zadd("retry", {json.dumps(failed(500 + n)): 1700000000 + n for n in range(30)})
    html = text(client.get("/sidekiq/retries"))
    assert html.count('name="key[]"') == 25 and "Page 1 of 2" in html
    assert 'href="/sidekiq/retries?page=2"' in html
    html2 = text(client.get("/sidekiq/retries?page=2"))
    assert html2.count('name="key[]"') == 5 and "Page 2 of 2" in html2


def test_queue_page_order_toggle(client, redis_client):
    for n in range(1, 4):
        push(redis_client, job(n))
    newest = text(client.get("/sidekiq/queues/default"))
    oldest = text(client.get("/sidekiq/queues/default?direction=asc"))
    assert newest.index(jid(3)) < newest.index(jid(1))
    assert oldest.index(jid(1)) < oldest.index(jid(3))


@pytest.mark.parametrize("name", ["bad%20name", "%3Cscript%3E", "a'b", "a$b", "%C3%A9t%C3%A9"])
def test_bad_queue_names_are_404(client, keys, name):
    assert client.get(f"/sidekiq/queues/{name}").status_code == 404
    assert csrf_post(client, f"/sidekiq/queues/{name}").status_code == 404
    assert csrf_post(client, f"/sidekiq/queues/{name}/delete", data={"key_val": "x"}).status_code == 404


def test_queue_names_with_dots_colons_dashes_are_fine(client, redis_client):
    push(redis_client, job(1, queue="mailers:v2.high-prio_1"))
    assert client.get("/sidekiq/queues/mailers:v2.high-prio_1").status_code == 200
    assert client.get("/sidekiq/queues/MAILERS").status_code == 200


# ----------------------------------------------------------------------------------------------- job pages


def test_retry_job_page_shows_everything(client, redis_client):
    payload = failed(77, message="it broke", retry_count=2,
                     backtrace=["app/models/order.rb:12:in `charge!'", "app/jobs/charge_job.rb:5:in `perform'"],
                     args=[{"order_id": 42, "items": [1, 2]}], tags=["billing"], custom_key="extra value", bid="B-1")
    key = zadd(redis_client, "retry", payload, time.time() + 300)
    response = client.get(f"/sidekiq/retries/{key}")
    assert response.status_code == 200
    body = unescape(text(response))
    for word in ("Queue", "Job", "Arguments", "JID", jid(77), "Created At", "Enqueued", "Retry Count", "Last Retry",
                 "Next Retry", "Extras", "custom_key", "extra value", "Error Class", "RuntimeError", "Error Message",
                 "it broke", "Error Backtrace", "app/models/order.rb:12:in `charge!'", "billing", "Retry Now", "Kill",
                 "BID", "B-1"):
        assert word in body, word
    assert '"order_id": 42' in body  # pretty-printed JSON
    assert 'UTC"' in text(response) and "ago</time>" in text(response)  # relative time with absolute title
    listing = text(client.get("/sidekiq/retries"))
    assert 'href="/sidekiq/retries?substr=billing"' in listing  # tags filter the list, as Sidekiq 7+


def test_scheduled_and_dead_job_pages(client, keys):
    html = unescape(text(client.get(f"/sidekiq/scheduled/{keys['schedule'][0]}")))
    assert "Scheduled" in html and "later-0" in html and "Add to queue" in html
    html = unescape(text(client.get(f"/sidekiq/morgue/{keys['dead'][0]}")))
    assert "Last Retry" in html and "Dead::Error" in html and "Retry Now" in html


@pytest.mark.parametrize("kind,set_key", [("retries", "retry"), ("scheduled", "schedule"), ("morgue", "dead")])
def test_gone_job_redirects_back_with_notice(client, keys, kind, set_key):
    for key in ("1700000000.5-" + jid(999), "not-a-key", keys[set_key][0].split("-")[0] + "-" + jid(998)):
        response = client.get(f"/sidekiq/{kind}/{key}")
        assert response.status_code == 302 and response.headers["Location"] == f"/sidekiq/{kind}"
    follow = client.get(f"/sidekiq/{kind}/not-a-key", follow_redirects=True)
    assert "That job is gone" in text(follow)


# ----------------------------------------------------------------------------------------------- escaping


def test_everything_from_redis_is_escaped(client, redis_client):
    evil = failed(66, klass=HOSTILE, args=[HOSTILE, {"k": HOSTILE}], error_class=HOSTILE, message=HOSTILE,
                  backtrace=[HOSTILE], tags=[HOSTILE], queue="default", display_class=HOSTILE)
    evil[HOSTILE] = HOSTILE  # an extra
    retry_key = zadd(redis_client, "retry", evil, time.time() + 60)
    zadd(redis_client, "dead", evil, time.time())
    zadd(redis_client, "schedule", evil, time.time() + 60)
    push(redis_client, evil)
    redis_client.sadd("queues", HOSTILE)  # an invalid queue name, listed anyway
    add_process(redis_client, tag=HOSTILE, labels=[HOSTILE], queues=[HOSTILE], work={HOSTILE: evil})
    for path in ("/sidekiq/retries", "/sidekiq/scheduled", "/sidekiq/morgue", "/sidekiq/queues",
                 "/sidekiq/queues/default", "/sidekiq/busy", f"/sidekiq/retries/{retry_key}",
                 "/sidekiq/retries?substr=" + "%3Cscript%3E"):
        html = text(client.get(path))
        assert HOSTILE not in html, path
        assert "<script>alert" not in html, path
        assert HOSTILE_ESCAPED in html, path
    # the invalid queue name is shown but not linked (it would 404)
    assert 'href="/sidekiq/queues/%3Cscript' not in text(client.get("/sidekiq/queues"))


# ----------------------------------------------------------------------------------------------- actions


def test_bulk_retry_delete_kill_and_referer_query(client, redis_client, keys, caplog):
    caplog.set_level(logging.INFO, logger="kiqboard.actions")
    r = csrf_post(client, "/sidekiq/retries", data={"key[]": [keys["retry"][0]], "retry": "Retry Now"},
                  headers={"Referer": "http://localhost/sidekiq/retries?page=1&count=10"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/retries?page=1&count=10"
    assert jid(10) in queue_jids(redis_client, "default")
    assert redis_client.zcard("retry") == 2
    record = json.loads(caplog.records[-1].getMessage())
    assert record == {"who": "octocat", "pool": "sidekiq", "action": "retry", "target": "retry", "count": 1,
                      "keys": 1}

    r = csrf_post(client, "/sidekiq/retries", data={"key[]": [keys["retry"][1]], "kill": "Kill"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/retries"
    assert jid(11) in [m["jid"] for m in members(redis_client, "dead")]

    r = csrf_post(client, "/sidekiq/retries", data={"key[]": [keys["retry"][2]], "delete": "Delete"})
    assert r.status_code == 302 and redis_client.zcard("retry") == 0
    assert json.loads(caplog.records[-1].getMessage())["action"] == "delete"


def test_bulk_post_without_keys_redirects_to_itself(client, keys):
    r = csrf_post(client, "/sidekiq/retries", data={"retry": "Retry Now"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/retries"


def test_single_job_actions(client, redis_client, keys):
    r = csrf_post(client, f"/sidekiq/retries/{keys['retry'][0]}", data={"retry": "Retry Now"},
                  headers={"Referer": "http://localhost/sidekiq/retries/x?page=3"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/retries?page=3"
    assert jid(10) in queue_jids(redis_client, "default")
    csrf_post(client, f"/sidekiq/retries/{keys['retry'][1]}", data={"kill": "Kill"})
    assert redis_client.zcard("dead") == 3
    csrf_post(client, f"/sidekiq/retries/{keys['retry'][2]}", data={"delete": "Delete"})
    assert redis_client.zcard("retry") == 0
    csrf_post(client, f"/sidekiq/scheduled/{keys['schedule'][0]}", data={"add_to_queue": "Add to queue"})
    assert jid(20) in queue_jids(redis_client, "default") and redis_client.zcard("schedule") == 1
    csrf_post(client, f"/sidekiq/scheduled/{keys['schedule'][1]}", data={"delete": "Delete"})
    assert redis_client.zcard("schedule") == 0
    r = csrf_post(client, f"/sidekiq/morgue/{keys['dead'][0]}", data={"retry": "Retry Now"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/morgue"
    assert jid(30) in queue_jids(redis_client, "default")
    csrf_post(client, f"/sidekiq/morgue/{keys['dead'][1]}", data={"delete": "Delete"})
    assert jid(31) not in [m["jid"] for m in members(redis_client, "dead")]
    # a stale key is a no-op and still redirects
    r = csrf_post(client, f"/sidekiq/retries/{keys['retry'][0]}", data={"retry": "Retry Now"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/retries"


def test_scheduled_and_morgue_bulk(client, redis_client, keys):
    r = csrf_post(client, "/sidekiq/scheduled", data={"key[]": keys["schedule"], "add_to_queue": "Add to queue"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/scheduled"
    assert redis_client.zcard("schedule") == 0 and {jid(20), jid(21)} <= set(queue_jids(redis_client, "default"))
    r = csrf_post(client, "/sidekiq/morgue", data={"key[]": keys["dead"], "delete": "Delete"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/morgue" and redis_client.zcard("dead") == 0


@pytest.mark.parametrize("path,set_key,check,message", [
    ("/sidekiq/retries/all/retry", "retry", lambda r: len(queue_jids(r, "default")) == 6, "Retried 3 jobs"),
    ("/sidekiq/retries/all/delete", "retry", lambda r: True, "Deleted 3 jobs"),
    ("/sidekiq/retries/all/kill", "retry", lambda r: r.zcard("dead") == 5, "Killed 3 jobs"),
    ("/sidekiq/scheduled/all/add_to_queue", "schedule", lambda r: len(queue_jids(r, "default")) == 5,
     "Enqueued 2 jobs to their queues"),
    ("/sidekiq/scheduled/all/delete", "schedule", lambda r: True, "Deleted 2 jobs"),
    ("/sidekiq/morgue/all/retry", "dead", lambda r: len(queue_jids(r, "default")) == 5, "Retried 2 jobs"),
    ("/sidekiq/morgue/all/delete", "dead", lambda r: True, "Deleted 2 jobs"),
])
def test_all_actions_form_fallback(client, redis_client, keys, caplog, path, set_key, check, message):
    caplog.set_level(logging.INFO, logger="kiqboard.actions")
    r = csrf_post(client, path)
    list_path = path.rsplit("/all/", 1)[0]
    assert r.status_code == 302 and r.headers["Location"] == list_path
    assert redis_client.zcard(set_key) == 0 and check(redis_client)
    assert message in text(client.get(list_path))
    record = json.loads(caplog.records[-1].getMessage())
    assert record["who"] == "octocat" and record["action"].endswith("_all") and record["count"] > 0


def test_all_action_unknown_is_404(client, keys):
    assert csrf_post(client, "/sidekiq/scheduled/all/kill").status_code == 404
    assert csrf_post(client, "/sidekiq/morgue/all/add_to_queue").status_code == 404


def test_all_action_streams_ndjson_progress(client, redis_client):
    redis_client.zadd("retry", {json.dumps(failed(2000 + n)): 1700000000 + n for n in range(3000)})
    r = csrf_post(client, "/sidekiq/retries/all/retry", headers={"Accept": "application/x-ndjson"})
    assert r.status_code == 200 and r.mimetype == "application/x-ndjson"
    events = [json.loads(line) for line in text(r).splitlines() if line.strip()]
    assert events[0]["event"] == "start"
    assert events[-1] == {"event": "done", "count": 3000, "message": "Retried 3,000 jobs",
                          "location": "/sidekiq/retries"}
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 3000
    assert redis_client.zcard("retry") == 0 and redis_client.llen("queue:default") == 3000


def test_queue_delete_and_delete_one_job(client, redis_client, keys, caplog):
    caplog.set_level(logging.INFO, logger="kiqboard.actions")
    raw = redis_client.lrange("queue:default", 0, 0)[0].decode()
    r = csrf_post(client, "/sidekiq/queues/default/delete", data={"key_val": raw},
                  headers={"Referer": "http://localhost/sidekiq/queues/default?direction=asc"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/queues/default?direction=asc"
    assert redis_client.llen("queue:default") == 2
    assert json.loads(caplog.records[-1].getMessage())["action"] == "delete_job"
    r = csrf_post(client, "/sidekiq/queues/low", data={"pause": "1"})
    assert r.status_code == 400 and redis_client.llen("queue:low") == 1  # never "pause" = clear
    r = csrf_post(client, "/sidekiq/queues/low")
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/queues"
    assert not redis_client.exists("queue:low") and not redis_client.sismember("queues", "low")
    assert json.loads(caplog.records[-1].getMessage())["target"] == "low"


def test_busy_quiet_stop(client, redis_client, keys, caplog):
    caplog.set_level(logging.INFO, logger="kiqboard.actions")
    identity = "worker-1:4242:abcdef012345"
    r = csrf_post(client, "/sidekiq/busy", data={"identity": identity, "quiet": "1"})
    assert r.status_code == 302 and r.headers["Location"] == "/sidekiq/busy"
    assert redis_client.lrange(f"{identity}-signals", 0, -1) == [b"TSTP"]
    csrf_post(client, "/sidekiq/busy", data={"stop": "1"})
    assert redis_client.lrange(f"{identity}-signals", 0, 0) == [b"TERM"]
    assert redis_client.lrange("worker-2:4343:bbbbbbbbbbbb-signals", 0, -1) == [b"TERM"]
    record = json.loads(caplog.records[-1].getMessage())
    assert record["action"] == "stop_all" and record["count"] == 2


# ----------------------------------------------------------------------------------------------- filter


def test_filter_hides_all_buttons_and_server_refuses_all(client, redis_client, keys):
    html = text(client.get("/sidekiq/retries?substr=failure+1"))
    assert html.count('name="key[]"') == 1 and "failure 1" in html
    for word in ("Retry All", "Delete All", "Kill All"):
        assert word not in html
    assert 'value="failure 1"' in html
    assert "Retry Now" in html  # selection actions stay
    for action in ("delete", "retry", "kill"):
        r = csrf_post(client, f"/sidekiq/retries/all/{action}", data={"substr": "failure 1"})
        assert r.status_code == 400
        r = csrf_post(client, f"/sidekiq/retries/all/{action}?substr=x")
        assert r.status_code == 400
        r = csrf_post(client, f"/sidekiq/retries/all/{action}",
                      headers={"Referer": "http://localhost/sidekiq/retries?substr=failure"})
        assert r.status_code == 400
    assert redis_client.zcard("retry") == 3
    r = csrf_post(client, "/sidekiq/scheduled/all/delete", data={"substr": "later"})
    assert r.status_code == 400 and redis_client.zcard("schedule") == 2


def test_empty_states(client, redis_client):
    assert "No retries were found" in text(client.get("/sidekiq/retries"))
    assert "No scheduled jobs were found" in text(client.get("/sidekiq/scheduled"))
    assert "No dead jobs were found" in text(client.get("/sidekiq/morgue"))
    assert "No retries were found" in text(client.get("/sidekiq/retries?substr=nothing-matches"))


# ----------------------------------------------------------------------------------------------- who may do what


def test_read_only_user_sees_no_buttons_and_gets_403(viewer, client2):
    keys = seed(client2)
    pages = ["/sidekiq2/busy", "/sidekiq2/queues", "/sidekiq2/queues/default", "/sidekiq2/retries",
             "/sidekiq2/scheduled", "/sidekiq2/morgue", f"/sidekiq2/retries/{keys['retry'][0]}"]
    for path in pages:
        response = viewer.get(path)
        assert response.status_code == 200, path
        html = text(response)
        assert 'type="checkbox"' not in html, path
        assert html.count('method="post"') == 1 and 'action="/logout"' in html, path  # only Sign out
        for word in ("Retry Now", "Delete", "Kill", "Quiet All", "Add to queue", "Retry All"):
            assert f">{word}<" not in html, (path, word)
        assert "read-only" in html
    for path, data in [("/sidekiq2/retries", {"key[]": keys["retry"], "delete": "Delete"}),
                       ("/sidekiq2/retries/all/delete", {}), ("/sidekiq2/queues/default", {}),
                       ("/sidekiq2/busy", {"stop": "1"}), (f"/sidekiq2/morgue/{keys['dead'][0]}", {"delete": "1"})]:
        assert csrf_post(viewer, path, data=data).status_code == 403, path
    assert client2.zcard("retry") == 3 and client2.llen("queue:default") == 3 and client2.zcard("dead") == 2
    # pool "sidekiq" has no OPERATORS: the same user may change it
    seed_pool1 = viewer.get("/sidekiq/busy")
    assert seed_pool1.status_code == 200 and "read-only" not in text(seed_pool1)


def test_operator_of_team_sees_buttons(client, client2):
    seed(client2)
    html = text(client.get("/sidekiq2/retries"))
    assert "Retry Now" in html and 'name="key[]"' in html


def test_csrf_enforced(client, redis_client, keys):
    r = client.post("/sidekiq/retries/all/delete")
    assert r.status_code == 403
    r = client.post("/sidekiq/retries", data={"key[]": keys["retry"], "delete": "Delete",
                                              "authenticity_token": "wrong"})
    assert r.status_code == 403
    r = client.post("/sidekiq/retries/all/delete", headers={"X-CSRF-Token": csrf_token(client),
                                                            "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert redis_client.zcard("retry") == 3
    r = client.post("/sidekiq/retries/all/delete", headers={"X-CSRF-Token": csrf_token(client)})
    assert r.status_code == 302 and redis_client.zcard("retry") == 0
    assert 'name="csrf-token" content="' in text(client.get("/sidekiq/"))


def test_signed_out(app, keys):
    anonymous = app.test_client()
    r = anonymous.get("/sidekiq/retries?page=2")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")
    assert anonymous.get("/sidekiq/stats").status_code == 401
    assert anonymous.post("/sidekiq/retries/all/delete").status_code in (302, 401, 403)


# ----------------------------------------------------------------------------------------------- performance


def test_one_reader_call_per_page(app, client, keys, monkeypatch):
    pool = app.extensions["kiqboard"]["pools"]["sidekiq"]
    calls: list[str] = []
    reader = pool.reader
    for name in ("dashboard", "busy", "queues", "queue", "sorted_set", "entry", "stats", "stats_json",
                 "queue_sizes", "find_entry"):
        original = getattr(reader, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(reader, name, spy)
    client.get("/sidekiq/")  # warms the footer's cached Redis version
    for path, expected in [("/sidekiq/busy", "busy"), ("/sidekiq/queues", "queues"),
                           ("/sidekiq/queues/default", "queue"), ("/sidekiq/retries", "sorted_set"),
                           ("/sidekiq/morgue", "sorted_set"), (f"/sidekiq/retries/{keys['retry'][0]}", "entry"),
                           ("/sidekiq/stats", "stats_json")]:
        calls.clear()
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        elapsed = time.perf_counter() - started
        assert calls == [expected], (path, calls)
        assert elapsed < 0.5, (path, elapsed)


# ----------------------------------------------------------------------------------------------- real Sidekiq data


@pytest.mark.ruby
def test_pages_render_data_written_by_real_sidekiq(client, redis_client, redis_server):
    from tests import sidekiq_support

    sidekiq_support.require_ruby()
    seeded = sidekiq_support.seed(redis_server.url)
    for path in ("/sidekiq/", "/sidekiq/busy", "/sidekiq/queues", "/sidekiq/queues/default", "/sidekiq/retries",
                 "/sidekiq/scheduled", "/sidekiq/morgue", "/sidekiq/stats", "/sidekiq/stats/queues"):
        assert client.get(path).status_code == 200, path
    retries = text(client.get("/sidekiq/retries"))
    assert "ArgumentError: transient failure" in unescape(retries)
    for kind, category in (("retries", "retry"), ("scheduled", "schedule"), ("morgue", "dead")):
        html = text(client.get(f"/sidekiq/{kind}"))
        keys = re.findall(r'name="key\[\]" value="([^"]+)"', html)
        assert len(keys) == len(seeded["jids"][category]), kind
        for key in keys:
            page = client.get(f"/sidekiq/{kind}/{key}")
            assert page.status_code == 200, (kind, key)
            if kind != "scheduled":
                assert "Error Class" in text(page)
    # Retry all of Sidekiq's own retries, through the UI
    r = csrf_post(client, "/sidekiq/retries/all/retry")
    assert r.status_code == 302 and redis_client.zcard("retry") == 0


def test_busy_pages_the_process_table_but_counts_every_process(client, redis_client):
    for n in range(130):
        add_process(redis_client, identity=f"host{n:03}:{n}:abcdef012345", busy=1)
    first = client.get("/sidekiq/busy").get_data(as_text=True)
    assert first.count('class="process-name"') == 100
    assert "host000:0" in first and "host129:129" not in first
    assert "Page 1 of 2" in first and "processes_page=2" in first
    second = client.get("/sidekiq/busy?processes_page=2").get_data(as_text=True)
    assert second.count('class="process-name"') == 30
    assert "host129:129" in second and "host000:0" not in second
    for page in (second, first):
        assert '<span class="stat-value">130</span><span class="stat-label">Processes</span>' in page
        assert '<span class="stat-value">1,300</span><span class="stat-label">Threads</span>' in page
    assert client.get("/sidekiq/busy?processes_page=99999999999999").status_code == 200
