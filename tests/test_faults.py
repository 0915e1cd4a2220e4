"""Per-pool faults: timeouts, the circuit breaker, the bulkhead, 503 pages/JSON naming the pool and the reason.

Real redis-servers: "alpha" healthy, "hung" stopped with SIGSTOP when a test says so, "gone" a port with nothing
listening. Short timeouts (0.3 s connect, 0.5 s read) keep the suite fast. Only behaviour is asserted (status codes,
content, breaker state) — speed is measured in bench/load.py, never asserted here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

import app as app_module
from config import load_settings
from pools import (
    Bulkhead,
    CircuitBreaker,
    PoolUnavailable,
    describe_redis_error,
    max_connections_for,
)
from tests.conftest import RedisServer, free_port
from tests.faults_support import GITHUB_ENV, hung, signed_in_client

PAGES = ["/", "/busy", "/queues", "/queues/default", "/retries", "/scheduled", "/morgue", "/stats", "/stats/queues"]


# ---------------------------------------------------------------------------------------------------------------
# The breaker on its own (a fake clock)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def timeout_error() -> redis.TimeoutError:
    return redis.TimeoutError("Timeout reading from socket")


def test_breaker_opens_after_repeated_failures_and_fails_fast():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=3, open_seconds=10, clock=clock)
    for _ in range(2):
        breaker.check("p")
        breaker.record_failure(timeout_error())
    assert breaker.state == "closed"
    breaker.check("p")
    breaker.record_failure(timeout_error())
    assert breaker.state == "open" and breaker.times_opened == 1
    with pytest.raises(PoolUnavailable) as refused:
        breaker.check("p")
    assert "is not answering (timed out)" in str(refused.value) and "tries it again in 10 s" in str(refused.value)


def test_refusals_do_not_keep_the_circuit_open():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, open_seconds=5, clock=clock)
    breaker.record_failure(redis.ConnectionError("refused"))
    for _ in range(50):  # steady traffic while open, each refusal handed back like app.py does
        clock.now += 0.09
        with pytest.raises(PoolUnavailable) as refused:
            breaker.check("p")
        breaker.record_failure(refused.value)
    clock.now += 0.6
    breaker.check("p")  # half-open: this one is the probe
    assert breaker.state == "half-open"
    assert str(refused.value).count("(") == 1  # the reason does not nest refusal inside refusal


def test_half_open_lets_one_probe_through_then_closes_on_success():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=3, clock=clock)
    breaker.record_failure(timeout_error())
    breaker.record_failure(timeout_error())
    clock.now += 3
    breaker.check("p")  # the probe
    with pytest.raises(PoolUnavailable, match="checking it again"):
        breaker.check("p")  # everyone else still fails fast while the probe is out
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.check("p")
    breaker.check("p")


def test_a_failed_probe_opens_the_circuit_again():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=3, clock=clock)
    breaker.record_failure(timeout_error())
    breaker.record_failure(timeout_error())
    clock.now += 3
    breaker.check("p")
    breaker.record_failure(timeout_error())
    assert breaker.state == "open" and breaker.times_opened == 2
    with pytest.raises(PoolUnavailable, match="tries it again in 3 s"):
        breaker.check("p")


def test_a_probe_that_never_reports_expires():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, open_seconds=2, clock=clock, probe_seconds=4)
    breaker.record_failure(timeout_error())
    clock.now += 2
    breaker.check("p")  # the probe's request dies without a word (e.g. a 500)
    clock.now += 3.9
    with pytest.raises(PoolUnavailable):
        breaker.check("p")
    clock.now += 0.2
    breaker.check("p")  # a new probe


@pytest.mark.parametrize("error", [
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    redis.exceptions.NoScriptError("NOSCRIPT"),
    ValueError("not Redis at all"),
])
def test_answers_and_bugs_do_not_open_the_circuit(error):
    breaker = CircuitBreaker(failures_to_open=1, open_seconds=10, clock=Clock())
    breaker.record_failure(error)
    assert breaker.state == "closed"


def test_reasons_name_what_happened():
    assert describe_redis_error(redis.TimeoutError()) == "is not answering (timed out)"
    assert describe_redis_error(redis.ConnectionError("Error 111 connecting")) == "cannot be reached"
    assert describe_redis_error(redis.AuthenticationError("invalid password")) == "refused the password"
    assert "every connection is busy" in describe_redis_error(redis.ConnectionError("No connection available."))
    assert describe_redis_error(redis.ResponseError("ERR boom")).startswith("answered with an error: ERR boom")


def test_bulkhead_waits_for_a_healthy_pool_and_sheds_for_a_slow_one():
    clock = Clock()
    bulkhead = Bulkhead(limit=2, wait=0.5, slow_after=0.2, clock=clock)
    first, second = bulkhead.acquire(), bulkhead.acquire()
    assert first and second
    clock.now += 0.3  # both have been inside longer than slow_after: refuse at once
    assert bulkhead.acquire() is None and bulkhead.refused == 1
    bulkhead.release(first)
    third = bulkhead.acquire()
    assert third and bulkhead.in_use == 2
    bulkhead.release(first)  # releasing twice is harmless
    assert bulkhead.in_use == 2
    clock.now += 0.01
    bulkhead.release(second)
    fourth = bulkhead.acquire()
    assert fourth
    assert bulkhead.acquire(shed=True) is None  # full, and the pool is failing: no waiting at all


def test_bulkhead_waiter_gets_the_slot_a_fast_request_frees():
    bulkhead = Bulkhead(limit=1, wait=5, slow_after=5)
    token = bulkhead.acquire()
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(bulkhead.acquire()))
    waiter.start()
    time.sleep(0.05)
    bulkhead.release(token)
    waiter.join(5)
    assert got and got[0] is not None


def test_pool_sizes_follow_the_thread_count():
    assert max_connections_for(8) == 10
    assert max_connections_for(3) == 5


# ---------------------------------------------------------------------------------------------------------------
# The real app against real servers


@pytest.fixture(scope="module")
def servers() -> Iterator[dict]:
    started = {name: RedisServer().start() for name in ("alpha", "hung")}
    yield {**started, "down_port": free_port()}
    for server in started.values():
        server.cleanup()


@pytest.fixture(scope="module")
def kiq_app(servers):
    env = {
        "REDIS_1": servers["alpha"].url, "REDIS_1_NAME": "alpha",
        "REDIS_2": servers["hung"].url, "REDIS_2_NAME": "hung",
        "REDIS_3": f"redis://127.0.0.1:{servers['down_port']}/0", "REDIS_3_NAME": "gone",
        "REDIS_4": servers["alpha"].url.replace("/0", "/1"), "REDIS_4_NAME": "secret", "REDIS_4_TEAMS": "acme/ops",
        "REDIS_CONNECT_TIMEOUT": "0.3", "REDIS_SOCKET_TIMEOUT": "0.5",
        **GITHUB_ENV,
    }
    application = app_module.create_app(load_settings(env))
    application.config.update(TESTING=True, KIQBOARD_OVERVIEW_DEADLINE=0.8)
    return application


@pytest.fixture
def pools(kiq_app):
    pools = kiq_app.extensions["kiqboard"]["pools"]
    for pool in pools.values():
        pool.breaker.open_seconds = 0.4
        pool.breaker.record_success()
    return pools


@pytest.fixture
def client(kiq_app, pools, servers):
    servers["alpha"].client().flushall()
    servers["alpha"].client().lpush("queue:default", '{"class":"HardWorker","args":[1],"jid":"abc","queue":"default"}')
    servers["alpha"].client().sadd("queues", "default")
    return signed_in_client(kiq_app, "octocat")


def test_timeouts_come_from_the_configuration(pools):
    kwargs = pools["hung"].redis.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 0.3 and kwargs["socket_timeout"] == 0.5


def test_connection_pools_are_bounded_and_blocking(pools, servers):
    pool = pools["alpha"].redis.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == max_connections_for(8)
    env = {"REDIS_1": servers["alpha"].url, "GUNICORN_THREADS": "3", **GITHUB_ENV}
    small = app_module.create_app(load_settings(env)).extensions["kiqboard"]["pools"]["sidekiq"]
    assert small.redis.connection_pool.max_connections == 5 and small.bulkhead.limit == 1
    # 30 threads hammering one pool never open more than its cap.
    reader = small.reader
    errors: list[BaseException] = []

    def hammer():
        try:
            for _ in range(20):
                reader.stats()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(small.redis.connection_pool._connections) <= 5


@pytest.mark.parametrize("path", PAGES)
def test_a_hung_pool_answers_503_naming_itself_and_the_reason(client, servers, pools, path):
    with hung(servers["hung"]):
        response = client.get("/hung" + path)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        if path.startswith("/stats"):
            assert response.json == {"error": "pool unavailable", "pool": "hung",
                                     "reason": "is not answering (timed out)", "status": 503}
        else:
            body = response.get_data(as_text=True)
            assert "hung is not answering" in body
            assert "is not answering (timed out)" in body
        # the other pool is untouched, at the same moment
        assert client.get("/alpha" + path).status_code == 200


def test_json_clients_get_json_errors(client, servers):
    with hung(servers["hung"]):
        response = client.get("/hung/retries", headers={"Accept": "application/json"})
    assert response.status_code == 503 and response.json["pool"] == "hung" and "timed out" in response.json["reason"]


def test_an_unreachable_pool_says_so(client, pools):
    response = client.get("/gone/stats")
    assert response.status_code == 503 and response.json["reason"] == "cannot be reached"
    body = client.get("/gone/").get_data(as_text=True)
    assert "gone is not answering" in body and "cannot be reached" in body


def test_circuit_opens_fails_fast_probes_and_recovers_without_restart(client, servers, pools):
    breaker = pools["hung"].breaker
    with hung(servers["hung"]):
        for _ in range(breaker.failures_to_open):
            assert client.get("/hung/").status_code == 503
            assert client.get("/alpha/").status_code == 200  # interleaved healthy pages don't reset hung's count
        assert breaker.state == "open"
        response = client.get("/hung/stats")
        assert response.status_code == 503 and "failures in a row" in response.json["reason"]
        assert "tries it again" in response.json["reason"]
        time.sleep(breaker.open_seconds + 0.05)
        assert client.get("/hung/stats").status_code == 503  # the probe fails: open again
        assert breaker.state == "open"
    # Redis is back: keep asking (as the page's auto-refresh does) — refusals must not keep it open.
    deadline = time.monotonic() + 10
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(client.get("/hung/stats").status_code)
        if statuses[-1] == 200:
            break
        time.sleep(0.05)
    assert statuses[-1] == 200, statuses
    assert breaker.state == "closed"
    assert client.get("/hung/").status_code == 200


def test_refused_visitors_learn_nothing_about_pool_health(kiq_app, client, servers, pools):
    with hung(servers["hung"]):
        for _ in range(3):
            client.get("/hung/")
    assert pools["hung"].breaker.state == "open"
    anonymous = kiq_app.test_client()
    response = anonymous.get("/hung/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert anonymous.get("/hung/stats").status_code == 401
    pools["secret"].breaker.record_failure(redis.ConnectionError("x"))
    for _ in range(3):
        pools["secret"].breaker.record_failure(redis.ConnectionError("x"))
    assert pools["secret"].breaker.state == "open"
    assert client.get("/secret/").status_code == 404  # octocat is not in acme/ops: no 503 that names it


def test_a_failed_page_does_not_leak_bulkhead_slots(client, servers, pools):
    bulkhead = pools["hung"].bulkhead
    with hung(servers["hung"]):
        for _ in range(bulkhead.limit + 2):
            client.get("/hung/")
    assert client.get("/hung/").status_code == 200 or pools["hung"].breaker.state != "closed"
    # every slot is free again
    assert bulkhead.in_use == 0


def test_concurrent_requests_on_a_hung_pool_are_shed_and_the_healthy_pool_answers(kiq_app, servers, pools):
    results: dict[str, list] = {"hung": [], "alpha": []}
    lock = threading.Lock()
    pools["hung"].breaker.failures_to_open = 1000  # see the bulkhead alone, not the breaker
    pools["hung"].bulkhead.wait = pools["hung"].bulkhead.slow_after = 0.1

    def fetch(name: str, path: str) -> None:
        client = signed_in_client(kiq_app, "octocat")
        response = client.get(f"/{name}{path}")
        with lock:
            results[name].append((response.status_code, response.get_data(as_text=True)))

    try:
        with hung(servers["hung"]):
            threads = [threading.Thread(target=fetch, args=("hung", "/retries")) for _ in range(pools["hung"].bulkhead.limit * 3)]
            threads += [threading.Thread(target=fetch, args=("alpha", "/retries")) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        pools["hung"].breaker.failures_to_open = 3
        pools["hung"].bulkhead.wait, pools["hung"].bulkhead.slow_after = 1.0, 0.5
    assert [status for status, _ in results["alpha"]] == [200] * 8
    assert {status for status, _ in results["hung"]} == {503}
    shed = [body for _, body in results["hung"] if "already waiting on it" in body]
    timed_out = [body for _, body in results["hung"] if "timed out" in body]
    assert shed and timed_out and len(shed) + len(timed_out) == len(results["hung"])


def test_overview_shows_the_hung_pool_and_the_others(client, servers):
    with hung(servers["hung"]):
        response = client.get("/api/pools")
    assert response.status_code == 200
    by_name = {row["name"]: row for row in response.json["pools"]}
    assert by_name["alpha"]["status"] == "up" and by_name["hung"]["status"] == "down"
    assert by_name["gone"]["status"] == "down" and "cannot be reached" in by_name["gone"]["error"]
