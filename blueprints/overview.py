"""Across pools: the overview (GET /), its JSON (GET /api/pools), Prometheus metrics (GET /metrics) and jid search.

Every visible pool is read at the same time on a small per-process thread pool, and each read gets the same
deadline counted from the start of the request, so ten pools cost about what one costs and a hung pool shows
"not answering" instead of holding the page. A read already in flight for a pool is shared (single flight): a hung
pool ties up at most one worker thread per kind of read, however many browsers refresh the overview at once.

The thread pool is a per-process cache, not request state; it is made lazily and again after a fork (gunicorn).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import redis
from flask import Blueprint, Response, current_app, jsonify, render_template, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

import auth
from pools import Pool, PoolUnavailable, describe_redis_error

log = logging.getLogger("kiqboard.overview")

# Defaults; each can be overridden per app with app.config["KIQBOARD_OVERVIEW_<NAME>"].
DEADLINE_SECONDS = 1.5  # a pool that has not answered by then is "not answering"
SLOW_SECONDS = 0.5  # a pool that answered but took at least this long is "slow"
REFRESH_SECONDS = 5  # the page's auto-refresh period (never below 2 s)
SEARCH_DEADLINE_SECONDS = 3.0
HISTORY_DAYS = 7
SEARCH_LIMIT = 50  # results per pool from the sets, and again from the running jobs
SEARCH_SCAN_RESULTS = 200  # payload matches asked of the reader per pool (then filtered on the jid)
SEARCH_MAX_QUERY = 100
BUSY_SCAN = 1000  # running jobs looked at per pool by the search (the reader's page cap)
MAX_WORKERS = 64

SET_PAGES = {"retry": "retries", "schedule": "scheduled", "dead": "morgue"}
SET_LABELS = {"retry": "Retries", "schedule": "Scheduled", "dead": "Dead", "busy": "Running", "sets": "Job sets"}


# ---------------------------------------------------------------------------------------------------------------
# Concurrent reads with a deadline


class _Reads:
    """A lazily made ThreadPoolExecutor plus single-flight bookkeeping, remade after a fork."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.max_workers = max_workers
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.inflight: dict[tuple, Future] = {}

    def submit(self, key: tuple, fn: Callable[[], Any]) -> Future:
        with self.lock:
            if self.pid != os.getpid() or self.executor is None:
                # After a fork the parent's worker threads do not exist here: start afresh.
                self.executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="kiqboard-read")
                self.inflight = {}
                self.pid = os.getpid()
            future = self.inflight.get(key)
            if future is not None:
                return future
            future = self.executor.submit(fn)
            self.inflight[key] = future
            inflight = self.inflight

        def forget(done: Future) -> None:
            with self.lock:
                if inflight.get(key) is done:
                    del inflight[key]

        future.add_done_callback(forget)
        return future


_reads = _Reads()


@dataclass
class Reading:
    """One pool's answer to one kind of read: the value, or why there is none."""

    pool: Pool
    status: str  # "up" | "slow" | "down"
    value: Any = None
    error: str | None = None
    elapsed: float | None = None  # seconds the read took (None when it did not finish in time)
    timed_out: bool = False

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def ok(self) -> bool:
        return self.status != "down"


def describe_error(error: BaseException) -> str:
    """The lead's wording for a pool fault (pools.describe_redis_error), plus redis-py's detail when it adds any."""
    text = describe_redis_error(error)
    if isinstance(error, (redis.RedisError, OSError)) and not isinstance(error, (PoolUnavailable, redis.ResponseError)):
        detail = str(error).strip()
        if detail and detail not in text:
            text = f"{text}: {detail}"
    return text if len(text) <= 300 else text[:299] + "…"


def _guarded(pool: Pool, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Honour the pool's circuit breaker (fail fast while open) and feed it the outcome."""
    breaker = pool.breaker

    def run() -> Any:
        breaker.check(pool.name)
        try:
            value = fn()
        except redis.RedisError as error:
            breaker.record_failure(error)
            raise
        breaker.record_success()
        return value

    return run


def _open_circuit(pool: Pool) -> Future | None:
    """A finished Future holding the breaker's refusal while the pool's circuit is open, else None."""
    refusal = pool.breaker.refusal()
    if refusal is None:
        return None
    future: Future = Future()
    future.set_exception(refusal)
    return future


def read_concurrently(
    tasks: Sequence[tuple[Pool, str, Callable[[], Any]]], deadline: float, slow: float
) -> list[Reading]:
    """Run each (pool, kind, fn) on the shared thread pool; wait for all of them until one common deadline."""
    start = time.monotonic()
    end = start + deadline
    started: list[tuple[Pool, Future]] = []
    for pool, kind, fn in tasks:
        refusal = _open_circuit(pool)
        if refusal is not None:  # fail fast, even while an earlier read of this pool is still in flight
            started.append((pool, refusal))
            continue
        started.append((pool, _reads.submit((id(pool), kind), _timed(_guarded(pool, fn)))))
    # One wait for all (the request thread wakes once, not once per pool), bounded by the common deadline.
    wait([future for _, future in started], timeout=max(0.0, end - time.monotonic()))
    readings: list[Reading] = []
    for pool, future in started:
        try:
            value, elapsed = future.result(timeout=0)
        except BaseException as error:  # noqa: BLE001 - every failure becomes a "down" reading
            if not future.done():
                # No reply by the deadline: that counts towards opening the circuit.
                pool.breaker.record_failure(redis.TimeoutError(f"no reply within {deadline:g} s"))
                readings.append(
                    Reading(pool, "down", error=f"not answering (no reply within {deadline:g} s)", timed_out=True)
                )
                continue
            if not isinstance(error, (redis.RedisError, OSError)):
                log.error("reading pool %s failed", pool.name, exc_info=error)
            readings.append(Reading(pool, "down", error=describe_error(error)))
            continue
        readings.append(Reading(pool, "slow" if elapsed >= slow else "up", value=value, elapsed=elapsed))
    return readings


def _timed(fn: Callable[[], Any]) -> Callable[[], tuple[Any, float]]:
    def run() -> tuple[Any, float]:
        began = time.monotonic()
        value = fn()
        return value, time.monotonic() - began

    return run


def _setting(name: str, default: float) -> float:
    return float(current_app.config.get(f"KIQBOARD_OVERVIEW_{name}", default))


# ---------------------------------------------------------------------------------------------------------------
# What one pool contributes to the overview


@dataclass(frozen=True)
class PoolSummary:
    stats: Any  # sidekiq_reader.Stats
    history: Any  # sidekiq_reader.History (newest first)
    queues: list  # list[sidekiq_reader.QueueSummary]
    threads: int | None  # Σ concurrency of the live processes

    @property
    def processed_today(self) -> int:
        return self.history.processed[0] if self.history.processed else 0

    @property
    def failed_today(self) -> int:
        return self.history.failed[0] if self.history.failed else 0

    @property
    def worst_queue(self) -> tuple[str | None, float]:
        """(name, latency) of the queue whose oldest job has waited longest ("default" counts even if unregistered)."""
        name, latency = ("default", self.stats.default_latency) if self.stats.default_latency > 0 else (None, 0.0)
        for queue in self.queues:
            if queue.latency > latency or (name is None and queue.latency >= latency):
                name, latency = queue.name, queue.latency
        return name, latency


def read_summary(pool: Pool) -> PoolSummary:
    """Stats + 7 days of history + every queue's size and latency, in the reader's fewest round trips."""
    data = pool.reader.overview(days=HISTORY_DAYS)
    return PoolSummary(data.stats, data.history, list(data.queues), data.threads)


def pool_path(pool_name: str, *parts: str) -> str:
    """A path under the pool's mount (the contract's paths; quoted; respects the app's SCRIPT_NAME)."""
    path = "/" + quote(pool_name, safe="")
    for part in parts:
        path += "/" + quote(part, safe="")
    return request.script_root + path


def _status_label(reading: Reading) -> str:
    if reading.timed_out:
        return "not answering"
    if reading.status == "slow":
        return f"slow ({reading.elapsed:.1f} s)"
    return reading.status


def sparkline(history: Any, width: int = 140, height: int = 36) -> dict:
    """Polyline points for a processed/failed sparkline, oldest day on the left (drawn as SVG in the template)."""
    dates = list(reversed(history.dates))
    processed = list(reversed(history.processed))
    failed = list(reversed(history.failed))
    n = len(dates)
    top = max([*processed, *failed, 1])
    pad = 2
    step = (width - 2 * pad) / max(n - 1, 1)

    def points(values: list[int]) -> str:
        return " ".join(
            f"{pad + i * step:.1f},{height - pad - (v / top) * (height - 2 * pad):.1f}" for i, v in enumerate(values)
        )

    title = "\n".join(f"{d.isoformat()}: {p:,} processed, {f:,} failed" for d, p, f in zip(dates, processed, failed))
    return {
        "width": width,
        "height": height,
        "processed": points(processed),
        "failed": points(failed),
        "days": n,
        "title": title,
        "max": top,
    }


def row(reading: Reading) -> dict:
    """Everything the page and the JSON say about one pool."""
    name = reading.name
    item: dict[str, Any] = {
        "name": name,
        "status": reading.status,
        "processed": None,
        "failed": None,
        "enqueued": None,
        "scheduled": None,
        "retries": None,
        "dead": None,
        "busy": None,
        "processes": None,
        "default_latency": None,
        "error": reading.error,
        "not_answering": reading.timed_out,
        "read_ms": round(reading.elapsed * 1000, 1) if reading.elapsed is not None else None,
        "processed_today": None,
        "failed_today": None,
        "threads": None,
        "max_latency": None,
        "max_latency_queue": None,
        "history": None,
        "url": pool_path(name) + "/",
    }
    summary: PoolSummary | None = reading.value
    if summary is not None:
        worst_name, worst_latency = summary.worst_queue
        item.update(summary.stats.as_sidekiq_json())  # the same numbers as the pool's /stats; keys keep the order above
        item.update(
            processed_today=summary.processed_today,
            failed_today=summary.failed_today,
            threads=summary.threads,
            max_latency=worst_latency,
            max_latency_queue=worst_name,
            history={
                "dates": [d.isoformat() for d in summary.history.dates],
                "processed": list(summary.history.processed),
                "failed": list(summary.history.failed),
            },
        )
    return item


def page_row(reading: Reading) -> dict:
    item = row(reading)
    name = reading.name
    item["label"] = _status_label(reading)
    item["links"] = {
        "dashboard": pool_path(name) + "/",
        "busy": pool_path(name, "busy"),
        "queues": pool_path(name, "queues"),
        "retries": pool_path(name, "retries"),
        "scheduled": pool_path(name, "scheduled"),
        "dead": pool_path(name, "morgue"),
    }
    summary: PoolSummary | None = reading.value
    item["spark"] = sparkline(summary.history) if summary is not None and summary.history.dates else None
    # Formatted here rather than with Jinja macros: ten cards render measurably faster.
    item["fmt"] = {key: format_number(item[key]) for key in (
        "processed_today", "failed_today", "enqueued", "busy", "threads", "processes", "retries", "scheduled", "dead")}
    item["fmt"]["default_latency"] = format_latency(item["default_latency"])
    item["fmt"]["max_latency"] = format_latency(item["max_latency"])
    return item


def format_number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def format_latency(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def read_visible(pools: dict[str, Pool]) -> list[Reading]:
    visible = auth.visible_pools(pools)
    tasks = [(pool, "summary", (lambda p=pool: read_summary(p))) for pool in visible]
    return read_concurrently(tasks, _setting("DEADLINE", DEADLINE_SECONDS), _setting("SLOW", SLOW_SECONDS))


# ---------------------------------------------------------------------------------------------------------------
# Prometheus


class PoolsCollector:
    """Reads the given pools when scraped (no background threads); one per request, in a fresh registry."""

    def __init__(self, read: Callable[[], list[Reading]]) -> None:
        self.read = read

    def collect(self) -> Iterable:
        readings = self.read()
        up = GaugeMetricFamily("kiqboard_pool_up", "1 if the pool's Redis answered in time, else 0", labels=["pool"])
        read_seconds = GaugeMetricFamily(
            "kiqboard_pool_read_seconds", "Seconds the pool took to answer this scrape's read", labels=["pool"]
        )
        processed = CounterMetricFamily("kiqboard_processed", "Jobs processed (Sidekiq's stat:processed)", labels=["pool"])
        failed = CounterMetricFamily("kiqboard_failed", "Jobs failed (Sidekiq's stat:failed)", labels=["pool"])
        gauges = {
            "enqueued": GaugeMetricFamily("kiqboard_enqueued", "Jobs waiting in all queues", labels=["pool"]),
            "busy": GaugeMetricFamily("kiqboard_busy", "Jobs running now", labels=["pool"]),
            "processes": GaugeMetricFamily("kiqboard_processes", "Sidekiq processes", labels=["pool"]),
            "retries": GaugeMetricFamily("kiqboard_retries", "Jobs in the retry set", labels=["pool"]),
            "scheduled": GaugeMetricFamily("kiqboard_scheduled", "Jobs in the schedule set", labels=["pool"]),
            "dead": GaugeMetricFamily("kiqboard_dead", "Jobs in the dead set", labels=["pool"]),
        }
        threads = GaugeMetricFamily("kiqboard_threads", "Worker threads of the live processes", labels=["pool"])
        queue_size = GaugeMetricFamily("kiqboard_queue_size", "Jobs waiting in the queue", labels=["pool", "queue"])
        queue_latency = GaugeMetricFamily(
            "kiqboard_queue_latency_seconds", "Age of the oldest job in the queue", labels=["pool", "queue"]
        )
        for reading in readings:
            name = reading.name
            up.add_metric([name], 1.0 if reading.ok else 0.0)
            summary: PoolSummary | None = reading.value
            if summary is None:
                continue
            read_seconds.add_metric([name], reading.elapsed or 0.0)
            s = summary.stats
            processed.add_metric([name], s.processed)
            failed.add_metric([name], s.failed)
            for attr, family in gauges.items():
                family.add_metric([name], getattr(s, attr))
            if summary.threads is not None:
                threads.add_metric([name], summary.threads)
            for queue in summary.queues:
                queue_size.add_metric([name, queue.name], queue.size)
                queue_latency.add_metric([name, queue.name], queue.latency)
        yield up
        yield read_seconds
        yield processed
        yield failed
        yield from gauges.values()
        yield threads
        yield queue_size
        yield queue_latency


# ---------------------------------------------------------------------------------------------------------------
# Search


@dataclass
class SearchHit:
    pool: str
    where: str  # "retry" | "schedule" | "dead" | "busy"
    jid: str
    klass: str
    queue: str | None
    at: datetime | None
    error: str | None
    url: str
    detail: str | None = None  # running jobs: process identity / tid


@dataclass
class PoolSearch:
    pool: str
    hits: list[SearchHit] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    truncated: bool = False


def _matches(jid: str | None, q: str) -> bool:
    return bool(jid) and q in jid  # type: ignore[operator]


def search_sets(pool: Pool, q: str) -> tuple[list[SearchHit], bool]:
    """Entries of retry, schedule and dead whose jid contains ``q`` (the reader's bounded ZSCAN, one round trip)."""
    entries = pool.reader.search_jid(q, limit=SEARCH_SCAN_RESULTS)
    hits = []
    for entry in entries:
        job = entry.job
        if not _matches(job.jid, q):
            continue  # ZSCAN MATCH looks at the whole payload; we want the jid
        hits.append(
            SearchHit(
                pool=pool.name,
                where=entry.set_name,
                jid=job.jid or "",
                klass=job.display_class,
                queue=job.queue,
                at=entry.at,
                error=job.error,
                url=pool_path_static(pool.name, SET_PAGES[entry.set_name], entry.key),
            )
        )
    truncated = len(entries) >= SEARCH_SCAN_RESULTS or len(hits) > SEARCH_LIMIT
    return hits[:SEARCH_LIMIT], truncated


def search_busy(pool: Pool, q: str) -> tuple[list[SearchHit], bool]:
    data = pool.reader.busy(page=1, count=BUSY_SCAN)
    hits = []
    for work in data.work.items:
        if not _matches(work.job.jid, q):
            continue
        hits.append(
            SearchHit(
                pool=pool.name,
                where="busy",
                jid=work.job.jid or "",
                klass=work.job.display_class,
                queue=work.queue or work.job.queue,
                at=work.run_at,
                error=None,
                url=pool_path_static(pool.name, "busy"),
                detail=f"{work.identity} · tid {work.tid}",
            )
        )
        if len(hits) >= SEARCH_LIMIT:
            return hits, True
    return hits, data.work.total > len(data.work.items)


def pool_path_static(pool_name: str, *parts: str, script_root: str = "") -> str:
    path = "/" + quote(pool_name, safe="")
    for part in parts:
        path += "/" + quote(part, safe="")
    return script_root + path


def normalize_query(raw: str | None) -> str:
    return (raw or "").strip()[:SEARCH_MAX_QUERY]


# ---------------------------------------------------------------------------------------------------------------
# The blueprint


def create_overview_blueprint(pools: dict[str, Pool]) -> Blueprint:
    bp = Blueprint("overview", __name__)

    @bp.before_request
    def signed_in():
        return auth.require_signed_in()

    @bp.get("/")
    def index():
        readings = read_visible(pools)
        rows = [page_row(r) for r in readings]
        refresh = max(2, int(_setting("REFRESH", REFRESH_SECONDS)))
        context = {
            "rows": rows,
            "refresh": refresh,
            "generated": datetime.now(timezone.utc).strftime("%H:%M:%S UTC"),
        }
        if request.args.get("fragment") == "pools":
            response = Response(render_template("overview/_pools.html", **context), mimetype="text/html")
            response.headers["X-Kiqboard-Fragment"] = "pools"
            return response
        return render_template("overview/index.html", **context)

    @bp.get("/api/pools")
    def api_pools():
        return jsonify(pools=[row(reading) for reading in read_visible(pools)])

    @bp.get("/metrics")
    def metrics():
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PoolsCollector(lambda: read_visible(pools)))  # type: ignore[arg-type]
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type)

    @bp.get("/search")
    def search():
        q = normalize_query(request.args.get("q"))
        results: list[PoolSearch] = []
        if q:
            visible = auth.visible_pools(pools)
            tasks: list[tuple[Pool, str, Callable[[], Any]]] = []
            for pool in visible:
                tasks.append((pool, f"search:sets:{q}", (lambda p=pool: search_sets(p, q))))
                tasks.append((pool, f"search:busy:{q}", (lambda p=pool: search_busy(p, q))))
            readings = read_concurrently(
                tasks, _setting("SEARCH_DEADLINE", SEARCH_DEADLINE_SECONDS), _setting("SLOW", SLOW_SECONDS)
            )
            by_pool: dict[str, PoolSearch] = {}
            for (pool, kind, _fn), reading in zip(tasks, readings):
                found = by_pool.setdefault(pool.name, PoolSearch(pool.name))
                where = SET_LABELS[kind.split(":")[1]]
                if not reading.ok:
                    message = f"{where}: {reading.error}"
                    found.errors.append(message)
                    continue
                hits, truncated = reading.value
                for hit in hits:
                    hit.url = request.script_root + hit.url
                found.hits.extend(hits)
                found.truncated = found.truncated or truncated
            results = list(by_pool.values())
        total = sum(len(r.hits) for r in results)
        return render_template(
            "overview/search.html", q=q, results=results, total=total, set_labels=SET_LABELS, limit=SEARCH_LIMIT
        )

    return bp
