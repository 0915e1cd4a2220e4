"""Fast variant of bench/chaos_actions.py: real Sidekiq (worker + scheduler poller) and the UI's retry / kill /
add-to-queue / delete in parallel, redis-server (appendonly, fsync always) restarted in the middle; at the end every
jid is in exactly one place — queued, in a set, executed once, or deleted by the UI. Skips without Ruby locally,
fails in CI (tests/sidekiq_support.require_ruby)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.ruby

spec = importlib.util.spec_from_file_location("kiqboard_bench_chaos", ROOT / "bench" / "chaos_actions.py")
chaos = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = chaos
spec.loader.exec_module(chaos)


def test_no_job_is_lost_or_doubled_under_chaos():
    summary = chaos.run(seconds=8, restarts=1, jobs=400, ui_threads=3, sidekiqs=1, verbose=False)
    print(summary)
    assert summary["problems"] == []
    tally = summary["tally"]
    assert "LOST" not in tally and "DUPLICATED" not in tally
    assert sum(tally.values()) == summary["jobs"]
    assert tally.get("executed", 0) > 0 and tally.get("deleted by the UI", 0) > 0
    assert summary["restarts"] == 1
    moved = summary["moved_by_ui"]
    assert moved.get("retry", 0) > 0 and moved.get("kill", 0) > 0 and moved.get("add_to_queue", 0) > 0
