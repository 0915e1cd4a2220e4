"""The overview across pools (GET /, /api/pools, /metrics, /search) against real redis-servers.

Four pools: two healthy real servers ("alpha", "beta" — beta limited to a team), one port with nothing listening
("gone"), and one real server that the hang tests stop with SIGSTOP ("hung"; always SIGCONT'd in teardown).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

import app as app_module
from auth import USER_SESSION_KEY, User
from blueprints import overview
from config import load_settings
from sidekiq_reader import entry_key
from tests.conftest import RedisServer, free_port

DEADLINE = 1.0  # the overview's per-request deadline in these tests (the default is 1.5 s)
REQUIRED_KEYS = [
    "name", "status", "processed", "failed", "enqueued", "scheduled", "retries", "dead", "busy", "processes",
    "default_latency",
]
TODAY = dt.datetime.now(dt.timezone.utc).date()


# ---------------------------------------------------------------------------------------------------------------
# Servers, app, sign-in


@pytest.fixture(scope="module")
def servers() -> Iterator[dict]:
    started = {name: RedisServer().start() for name in ("alpha", "beta", "hung")}
    down_port = free_port()
    yield {**started, "down_port": down_port}
    for server in started.values():
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.cleanup()


@pytest.fixture(scope="module")
def kiq_app(servers):
    env = {
        "REDIS_1": servers["alpha"].url, "REDIS_1_NAME": "alpha",
        "REDIS_2": servers["beta"].url, "REDIS_2_NAME": "beta", "REDIS_2_TEAMS": "acme/beta-team",
        "REDIS_3": f"redis://127.0.0.1:{servers['down_port']}/0", "REDIS_3_NAME": "gone",
        "REDIS_4": servers["hung"].url, "REDIS_4_NAME": "hung",
        "REDIS_CONNECT_TIMEOUT": "0.5", "REDIS_SOCKET_TIMEOUT": "1.5",
        "GITHUB_CLIENT_ID": "client", "GITHUB_CLIENT_SECRET": "secret", "GITHUB_ORG": "acme",
        "SECRET_KEY": "overview-tests-secret-key-0123456789",
    }
    application = app_module.create_app(load_settings(env))
    application.config.update(TESTING=True, KIQBOARD_OVERVIEW_DEADLINE=DEADLINE)
    return application


@pytest.fixture(scope="module")
def pools(kiq_app):
    return kiq_app.extensions["kiqboard"]["pools"]


@pytest.fixture(autouse=True)
def fresh(servers, pools):
    for name in ("alpha", "beta", "hung"):
        servers[name].client().flushall()
    for pool in pools.values():  # a short open circuit so recovery tests don't wait 10 s
        pool.breaker.open_seconds = 0.3
        pool.breaker.record_success()
    yield


def signed_in(kiq_app, login: str = "alice", teams: tuple[str, ...] = ()):
    client = kiq_app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = login
        session[USER_SESSION_KEY] = User(login=login, teams=teams, orgs=("acme",),
                                         membership_checked_at=time.time()).to_session()
    return client


@pytest.fixture
def bob(kiq_app):
    """Sees every pool (member of beta's team)."""
    return signed_in(kiq_app, "bob", ("acme/beta-team",))


@pytest.fixture
def alice(kiq_app):
    """Sees every pool but beta."""
    return signed_in(kiq_app, "alice")


@pytest.fixture
def hang(servers) -> Iterator:
    """SIGSTOP the "hung" pool's redis-server; SIGCONT it afterwards whatever happens."""
    pid = servers["hung"].process.pid
    os.kill(pid, signal.SIGSTOP)
    stopped = [True]

    def resume():
        if stopped[0]:
            os.kill(pid, signal.SIGCONT)
            stopped[0] = False

    try:
        yield resume
    finally:
        resume()


# ---------------------------------------------------------------------------------------------------------------
# Sidekiq-shaped data


def job(jid: str, klass: str = "HardWorker", queue: str = "default", **extra) -> dict:
    now = time.time()
    return {"class": klass, "args": [1, "two"], "jid": jid, "queue": queue, "retry": True,
            "created_at": now - 600, "enqueued_at": now - 500, **extra}


def seed(client, *, processed: int, failed: int, today: tuple[int, int], default_age: float, critical_age: float,
         prefix: str) -> dict:
    """A small Sidekiq keyspace; returns the jids/keys it wrote."""
    NOW = time.time()  # noqa: N806
    client.set("stat:processed", processed)
    client.set("stat:failed", failed)
    for offset in range(7):
        day = (TODAY - dt.timedelta(days=offset)).isoformat()
        p, f = (today if offset == 0 else (100 * offset, offset))
        client.set(f"stat:processed:{day}", p)
        client.set(f"stat:failed:{day}", f)
    client.sadd("queues", "default", "critical", "empty")
    for i in range(3):
        client.lpush("queue:default", json.dumps(job(f"{prefix}q{i}", enqueued_at=NOW - default_age + i)))
    client.lpush("queue:critical", json.dumps(job(f"{prefix}c0", queue="critical", enqueued_at=NOW - critical_age)))
    ids = {"retry": f"{prefix}retry-00001", "schedule": f"{prefix}sched-00001", "dead": f"{prefix}dead-00001",
           "busy": f"{prefix}busy-00001"}
    scores = {"retry": NOW + 300.25, "schedule": NOW + 3600.5, "dead": NOW - 3600.75}
    for set_name, score in scores.items():
        extra = {"error_class": "RuntimeError", "error_message": "boom", "retry_count": 2} if set_name != "schedule" else {}
        client.zadd(set_name, {json.dumps(job(ids[set_name], **extra)): score})
        client.zadd(set_name, {json.dumps(job(f"{prefix}other-{set_name}")): score + 1})
    identity = f"worker-{prefix}:4242:0123456789ab"
    client.sadd("processes", identity)
    client.hset(identity, mapping={
        "info": json.dumps({"hostname": f"worker-{prefix}", "pid": 4242, "concurrency": 10, "queues": ["default"],
                            "started_at": NOW - 1000, "tag": "app", "labels": [], "identity": identity}),
        "busy": 1, "beat": NOW, "quiet": "false", "rss": 1024,
    })
    client.hset(f"{identity}:work", "tid1", json.dumps(
        {"queue": "default", "payload": json.dumps(job(ids["busy"])), "run_at": int(NOW - 5)}))
    return {**ids, **{f"{k}_key": entry_key(v, ids[k]) for k, v in scores.items()}, "identity": identity}


def by_name(payload: dict) -> dict:
    return {item["name"]: item for item in payload["pools"]}


# ---------------------------------------------------------------------------------------------------------------
# GET /api/pools and GET /


def test_numbers_equal_each_pools_stats(servers, bob):
    seed(servers["alpha"].client(), processed=1234567, failed=89, today=(321, 7), default_age=30, critical_age=90,
         prefix="a")
    seed(servers["beta"].client(), processed=5, failed=1, today=(5, 1), default_age=2, critical_age=1, prefix="b")
    response = bob.get("/api/pools")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    pools = by_name(response.get_json())
    assert list(pools) == ["alpha", "beta", "gone", "hung"]  # configuration order
    for name in ("alpha", "beta"):
        item = pools[name]
        stats = bob.get(f"/{name}/stats").get_json()["sidekiq"]
        assert item["status"] in ("up", "slow")
        for key in ("processed", "failed", "enqueued", "scheduled", "retries", "dead", "busy", "processes"):
            assert item[key] == stats[key], (name, key)
        assert item["default_latency"] == pytest.approx(stats["default_latency"], abs=1.0)
        assert item["threads"] == 10
    alpha = pools["alpha"]
    assert (alpha["processed"], alpha["failed"], alpha["enqueued"]) == (1234567, 89, 4)
    assert (alpha["processed_today"], alpha["failed_today"]) == (321, 7)
    assert (alpha["retries"], alpha["scheduled"], alpha["dead"], alpha["busy"]) == (2, 2, 2, 1)
    assert alpha["default_latency"] == pytest.approx(30, abs=2)
    assert alpha["max_latency_queue"] == "critical" and alpha["max_latency"] == pytest.approx(90, abs=2)
    assert alpha["history"]["processed"] == [321, 100, 200, 300, 400, 500, 600]
    assert pools["beta"]["max_latency_queue"] == "default"

    page = bob.get("/").get_data(as_text=True)
    card = page[page.index('data-pool="alpha"'):page.index('data-pool="beta"')]
    assert "1,234,567" not in card  # the card shows today's numbers, not the lifetime counter
    assert re.search(r'n-processed-today">321<', card)
    assert re.search(r'n-failed-today">7<', card)
    assert re.search(r'n-busy">1 / 10<', card)
    assert re.search(r'n-enqueued">4<', card)
    assert re.search(r'n-max-latency">1\.5 min <span class="queue-name">critical</span>', card)
    assert 'href="/alpha/retries"' in card and 'href="/alpha/morgue"' in card and 'href="/alpha/busy"' in card


def test_api_pools_shape(servers, bob):
    seed(servers["alpha"].client(), processed=1, failed=0, today=(1, 0), default_age=1, critical_age=1, prefix="a")
    payload = bob.get("/api/pools").get_json()
    assert list(payload) == ["pools"]
    for item in payload["pools"]:
        assert list(item)[: len(REQUIRED_KEYS)] == REQUIRED_KEYS
        assert item["status"] in ("up", "down", "slow")
    pools = by_name(payload)
    alpha, gone = pools["alpha"], pools["gone"]
    for key in REQUIRED_KEYS[2:-1]:
        assert isinstance(alpha[key], int) and not isinstance(alpha[key], bool), key
    assert isinstance(alpha["default_latency"], float)
    assert alpha["error"] is None
    assert gone["status"] == "down"
    assert "cannot be reached" in gone["error"] and str(bob.application.extensions["kiqboard"]["pools"]["gone"]
                                                      .settings.url.split(":")[2].split("/")[0]) in gone["error"]
    assert all(gone[key] is None for key in REQUIRED_KEYS[2:])


def test_page_is_csp_clean_and_refreshes(bob):
    response = bob.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "style=" not in html
    assert not re.search(r"<style", html)
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert any("/static/overview.js" in tag for tag in scripts)
    assert "/static/overview.css" in html
    refresh = int(re.search(r'data-refresh="(\d+)"', html).group(1))
    assert refresh >= 2
    assert "<svg" in html and "<polyline" in html
    fragment = bob.get("/?fragment=pools")
    assert fragment.headers["X-Kiqboard-Fragment"] == "pools"
    assert "<html" not in fragment.get_data(as_text=True) and 'data-pool="alpha"' in fragment.get_data(as_text=True)
    for name in ("overview.js", "overview.css"):
        assert bob.get(f"/static/{name}").status_code == 200


def test_sparkline_has_seven_days(servers, bob):
    seed(servers["alpha"].client(), processed=1, failed=0, today=(700, 70), default_age=1, critical_age=1, prefix="a")
    html = bob.get("/").get_data(as_text=True)
    card = html[html.index('data-pool="alpha"'):html.index('data-pool="beta"')]
    processed_points = re.search(r'class="spark-processed" points="([^"]+)"', card).group(1).split()
    assert len(processed_points) == 7
    # today (the right-most point) is the week's maximum: drawn at the top
    assert float(processed_points[-1].split(",")[1]) == pytest.approx(2.0)
    assert f"{TODAY.isoformat()}: 700 processed, 70 failed" in card


# ---------------------------------------------------------------------------------------------------------------
# Down and hung pools


def test_hung_pool_is_not_answering_within_the_deadline_and_recovers(servers, pools, bob, hang):
    seed(servers["alpha"].client(), processed=42, failed=0, today=(1, 0), default_age=1, critical_age=1, prefix="a")
    for _ in range(2):
        started = time.monotonic()
        response = bob.get("/")
        took = time.monotonic() - started
        assert response.status_code == 200
        assert took < DEADLINE + 0.5, took
        html = response.get_data(as_text=True)
        card = html[html.index('data-pool="hung"'):]
        assert "not answering" in card
        alpha = html[html.index('data-pool="alpha"'):html.index('data-pool="beta"')]
        assert "status-up" in alpha or "status-slow" in alpha

    started = time.monotonic()
    payload = by_name(bob.get("/api/pools").get_json())
    assert time.monotonic() - started < DEADLINE + 0.5
    assert payload["hung"]["status"] == "down" and "not answering" in payload["hung"]["error"]
    assert payload["hung"]["not_answering"] is True and payload["gone"]["not_answering"] is False
    assert payload["alpha"]["processed"] == 42 and payload["alpha"]["status"] in ("up", "slow")

    started = time.monotonic()
    families = {f.name: f for f in text_string_to_metric_families(bob.get("/metrics").get_data(as_text=True))}
    assert time.monotonic() - started < DEADLINE + 0.5
    up = {s.labels["pool"]: s.value for s in families["kiqboard_pool_up"].samples}
    assert up == {"alpha": 1.0, "beta": 1.0, "gone": 0.0, "hung": 0.0}

    # A hung pool ties up one reader thread, however many requests ask for it (single flight).
    results = []
    threads = [threading.Thread(target=lambda: results.append(bob.get("/api/pools").status_code)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 5
    hung_reads = [key for key in overview._reads.inflight if key[0] == id(pools["hung"])]
    assert len(hung_reads) <= 1

    hang()  # SIGCONT
    deadline = time.monotonic() + 6
    while True:
        status = by_name(bob.get("/api/pools").get_json())["hung"]["status"]
        if status in ("up", "slow") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status in ("up", "slow")
    assert "not answering" not in bob.get("/").get_data(as_text=True)


def test_down_pool_comes_back(servers, bob):
    assert by_name(bob.get("/api/pools").get_json())["gone"]["status"] == "down"
    server = RedisServer(port=servers["down_port"]).start()
    try:
        server.client().set("stat:processed", 77)
        deadline = time.monotonic() + 6
        while True:
            gone = by_name(bob.get("/api/pools").get_json())["gone"]
            if gone["status"] != "down" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert gone["status"] in ("up", "slow") and gone["processed"] == 77
    finally:
        server.cleanup()
    deadline = time.monotonic() + 6
    while by_name(bob.get("/api/pools").get_json())["gone"]["status"] != "down":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_pool_answering_late_is_slow(kiq_app, bob):
    kiq_app.config["KIQBOARD_OVERVIEW_SLOW"] = 0.0  # every answer counts as late
    try:
        pools = by_name(bob.get("/api/pools").get_json())
        html = bob.get("/").get_data(as_text=True)
    finally:
        kiq_app.config.pop("KIQBOARD_OVERVIEW_SLOW")
    assert pools["alpha"]["status"] == "slow" and pools["alpha"]["processed"] == 0
    assert pools["gone"]["status"] == "down"
    assert re.search(r'status-slow"[^>]*>slow \(\d+\.\d s\)<', html)


def test_pools_are_read_concurrently(bob, hang):
    """Two slow things at once (the hung pool, and the down pool) still cost one deadline, not two."""
    started = time.monotonic()
    for path in ("/", "/api/pools", "/metrics"):
        assert bob.get(path).status_code == 200
    assert time.monotonic() - started < 3 * (DEADLINE + 0.4)


# ---------------------------------------------------------------------------------------------------------------
# /metrics


def test_metrics_parse_and_match(servers, bob):
    seed(servers["alpha"].client(), processed=1000, failed=10, today=(1, 0), default_age=20, critical_age=60,
         prefix="a")
    response = bob.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert families["kiqboard_processed"].type == "counter"
    assert families["kiqboard_failed"].type == "counter"
    assert value("kiqboard_pool_up", pool="alpha") == 1.0
    assert value("kiqboard_pool_up", pool="gone") == 0.0
    assert value("kiqboard_processed_total", pool="alpha") == 1000
    assert value("kiqboard_failed_total", pool="alpha") == 10
    stats = bob.get("/alpha/stats").get_json()["sidekiq"]
    for name in ("enqueued", "busy", "processes", "retries", "scheduled", "dead"):
        assert value(f"kiqboard_{name}", pool="alpha") == stats[name], name
    assert value("kiqboard_queue_size", pool="alpha", queue="default") == 3
    assert value("kiqboard_queue_size", pool="alpha", queue="critical") == 1
    assert value("kiqboard_queue_size", pool="alpha", queue="empty") == 0
    assert value("kiqboard_queue_latency_seconds", pool="alpha", queue="critical") == pytest.approx(60, abs=2)
    assert value("kiqboard_queue_latency_seconds", pool="alpha", queue="default") == pytest.approx(20, abs=2)
    assert not any(labels and dict(labels).get("pool") == "gone" for (name, labels) in samples
                   if name != "kiqboard_pool_up")

    openmetrics = bob.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.mimetype == "application/openmetrics-text"
    assert openmetrics.get_data(as_text=True).rstrip().endswith("# EOF")


def test_every_route_needs_sign_in(kiq_app):
    anonymous = kiq_app.test_client()
    for path in ("/api/pools", "/metrics"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.is_json
    for path in ("/", "/search?q=abc"):
        response = anonymous.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login")
    assert "next=%2Fsearch%3Fq%3Dabc" in response.headers["Location"] or "next=/search" in response.headers["Location"]
    bad = anonymous.get("/metrics", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert bad.status_code == 401


def test_visibility(servers, alice, bob):
    seed(servers["beta"].client(), processed=1, failed=0, today=(1, 0), default_age=1, critical_age=1, prefix="b")
    assert list(by_name(alice.get("/api/pools").get_json())) == ["alpha", "gone", "hung"]
    assert 'data-pool="beta"' not in alice.get("/").get_data(as_text=True)
    assert 'pool="beta"' not in alice.get("/metrics").get_data(as_text=True)
    html = alice.get("/search?q=bretry").get_data(as_text=True)
    assert "bretry-00001" not in html and 'data-pool="beta"' not in html
    assert "bretry-00001" in bob.get("/search?q=bretry").get_data(as_text=True)


# ---------------------------------------------------------------------------------------------------------------
# /search


def test_search_finds_a_jid_in_each_set_and_running(servers, bob):
    alpha = seed(servers["alpha"].client(), processed=1, failed=0, today=(1, 0), default_age=1, critical_age=1,
                 prefix="a")
    beta = seed(servers["beta"].client(), processed=1, failed=0, today=(1, 0), default_age=1, critical_age=1,
                prefix="b")
    for set_name, page in (("retry", "retries"), ("schedule", "scheduled"), ("dead", "morgue")):
        html = bob.get(f"/search?q={alpha[set_name]}").get_data(as_text=True)
        links = re.findall(r'class="hit-link" href="([^"]+)"', html)
        assert links == [f"/alpha/{page}/{alpha[set_name + '_key']}"], (set_name, links)
        job_page = bob.get(links[0])
        assert job_page.status_code == 200 and alpha[set_name] in job_page.get_data(as_text=True)
    html = bob.get(f"/search?q={alpha['busy']}").get_data(as_text=True)
    assert re.findall(r'class="hit-link" href="([^"]+)"', html) == ["/alpha/busy"]
    assert alpha["identity"] in html

    # A substring: every set and running job of both pools (the "other-…" jids too), nothing from queues.
    html = bob.get("/search?q=00001").get_data(as_text=True)
    for ids in (alpha, beta):
        for kind in ("retry", "schedule", "dead", "busy"):
            assert ids[kind] in html, (ids[kind], kind)
    assert "aq0" not in html
    assert "8 jobs found" in html


def test_search_reports_unanswering_pools(servers, bob, hang):
    seed(servers["alpha"].client(), processed=1, failed=0, today=(1, 0), default_age=1, critical_age=1, prefix="a")
    started = time.monotonic()
    html = bob.get("/search?q=aretry").get_data(as_text=True)
    assert time.monotonic() - started < 3.0 + 0.5
    assert "aretry-00001" in html
    hung = html[html.index('data-pool="hung"'):]
    assert "not answering" in hung
    gone = html[html.index('data-pool="gone"'):html.index('data-pool="hung"')]
    assert "cannot be reached" in gone


def test_search_query_is_bounded_and_blank_is_a_form(bob):
    html = bob.get("/search").get_data(as_text=True)
    assert "<form" in html and "jobs found" not in html
    long = bob.get("/search?q=" + "x" * 5000)
    assert long.status_code == 200
    assert "x" * 101 not in long.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------------------------
# Hostile data


def test_hostile_names_are_escaped(servers, bob):
    client = servers["alpha"].client()
    NOW = time.time()  # noqa: N806
    evil_queue = '<script>alert("q")</script>'
    client.sadd("queues", evil_queue)
    client.lpush(f"queue:{evil_queue}", json.dumps(job("x1", queue=evil_queue, enqueued_at=NOW - 9999)))
    evil_jid = 'evil"><img src=x onerror=alert(1)>'
    client.zadd("retry", {json.dumps(job(evil_jid, klass="<b>Bold</b>", error_class="<i>E</i>",
                                         error_message="<svg onload=alert(2)>")): NOW})
    client.zadd("dead", {b'\xff\xfe not json <script>alert(3)</script> evil': NOW})

    page = bob.get("/").get_data(as_text=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;q&#34;)&lt;/script&gt;" in page
    html = bob.get("/search?q=onerror").get_data(as_text=True)
    assert "<img src=x" not in html and "<b>Bold" not in html and "<i>E</i>" not in html
    assert "<svg onload" not in html
    assert "evil&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    link = re.findall(r'class="hit-link" href="([^"]+)"', html)[0]
    assert '"' not in link and "<" not in link and link.startswith("/alpha/retries/")
    assert "%3Cimg" in link
    assert bob.get("/search?q=<script>").status_code == 200

    families = {f.name: f for f in text_string_to_metric_families(bob.get("/metrics").get_data(as_text=True))}
    queues = {s.labels["queue"] for s in families["kiqboard_queue_latency_seconds"].samples if s.labels["pool"] == "alpha"}
    assert evil_queue in queues
    api = by_name(bob.get("/api/pools").get_json())["alpha"]
    assert api["max_latency_queue"] == evil_queue
