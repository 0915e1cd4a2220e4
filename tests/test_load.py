"""Fast variant of bench/load.py: the Procfile's gunicorn as a real process on loopback, one pool SIGSTOPped.

- 200 requests at once mixing the healthy pool's pages, the hung pool's pages and the overview: every one answers
  (healthy and overview pages 200, the hung pool's 503 naming it), none errors or hangs past the client timeout;
- ~1,000 more over 16 keep-alive connections: no errors, and the workers survive (same pids).
Speed and memory are measured by bench/load.py, not asserted here.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter

import pytest

from tests.conftest import ROOT
from tests.faults_support import hung

spec = importlib.util.spec_from_file_location("kiqboard_bench_load", ROOT / "bench" / "load.py")
load = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = load  # dataclasses look their module up
spec.loader.exec_module(load)


@pytest.fixture(scope="module")
def stack():
    servers, server, cookie, retry_key = load.start(workers=2, threads=8, jobs=60)
    yield servers, server, cookie, retry_key
    server.stop()
    for s in servers.values():
        s.cleanup()


def test_200_concurrent_requests_with_a_hung_pool_all_answer(stack):
    servers, server, cookie, retry_key = stack
    paths = load.mix(retry_key)
    workers = server.worker_pids()
    with hung(servers["hung"]):
        results = load.burst(server.url, cookie, paths, 200)
        assert load.check(results) == []
        statuses = Counter((r.kind, r.status) for r in results)
        assert set(statuses) == {("healthy", 200), ("hung", 503), ("overview", 200)}, statuses

        more, _ = load.steady(server.url, cookie, paths, 1000, 16, None)
        assert load.check(more) == []
        assert {(r.kind, r.status) for r in more} == {("healthy", 200), ("hung", 503), ("overview", 200)}
    assert sorted(server.worker_pids()) == sorted(workers)  # no worker died or was killed for a timeout
    assert "Traceback" not in server.read_log()
