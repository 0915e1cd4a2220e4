"""A pool: one Sidekiq app's Redis, as configured, with its reader and actions.

Pools are values handed to blueprint factories; nothing here is process-global.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

import redis

from config import PoolSettings
from sidekiq_actions import SidekiqActions
from sidekiq_reader import SidekiqReader

# Connections per pool per process. Each gunicorn thread needs at most one connection per pool at a time (a page is
# one reader call); the overview's reads and an "all" action's background thread need a couple more. A blocking pool
# waits briefly for a free connection instead of opening more, so this is a hard cap: a pool's Redis sees at most
# dynos x WEB_CONCURRENCY x (GUNICORN_THREADS + 2) connections from kiqboard (20 with the defaults).
DEFAULT_THREADS = 8
CONNECTION_HEADROOM = 2
DEFAULT_MAX_CONNECTIONS = DEFAULT_THREADS + CONNECTION_HEADROOM


def max_connections_for(threads: int) -> int:
    return max(1, threads) + CONNECTION_HEADROOM


def connect(settings: PoolSettings, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> redis.Redis:
    """A redis-py client with its own bounded connection pool. Options in the URL win over our defaults.

    No retries (redis-py's default when a pool is given): a hung Redis costs one socket timeout, not several.
    """
    connection_pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=max_connections,
        timeout=settings.connect_timeout + settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.socket_timeout,
        health_check_interval=30,
        client_name="kiqboard",
    )
    return redis.Redis(connection_pool=connection_pool)


class PoolUnavailable(redis.ConnectionError):
    """Raised without touching Redis while a pool's circuit is open (or its probe is in flight)."""


class PoolBusy(PoolUnavailable):
    """Raised without touching Redis when too many of this process's threads already wait on the pool."""


# Errors that say "this Redis is not answering" and so count towards opening the circuit. A ResponseError
# (WRONGTYPE on a key some app wrote oddly, a script error, READONLY…) is an answer: it fails that page, not the pool.
CIRCUIT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class CircuitBreaker:
    """Fail fast for a while after repeated failures, so a dead pool costs nothing but its own pages.

    closed → (failures_to_open failures in a row) → open: every check() raises PoolUnavailable at once for
    open_seconds → half-open: the next check() lets ONE caller through as the probe (the others still fail fast
    until it reports, or until probe_seconds pass without a report) → its success closes the circuit, its failure
    opens it again. Refusals (PoolUnavailable) are never counted as failures, so steady traffic on an open circuit
    cannot keep it open.

    Per process on purpose: losing it on restart only means a few slow requests until it opens again.
    """

    def __init__(self, failures_to_open: int = 3, open_seconds: float = 10.0, clock=time.monotonic,
                 probe_seconds: float | None = None) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self.probe_seconds = probe_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._probe_until = 0.0
        self.last_error: str | None = None
        self.times_opened = 0  # how often it went from closed to open (for logs and benchmarks)

    @property
    def state(self) -> str:
        with self._lock:
            return self._state(self.clock())

    def _state(self, now: float) -> str:
        if self._failures < self.failures_to_open:
            return "closed"
        if now < self._open_until:
            return "open"
        return "half-open"

    @property
    def failing(self) -> bool:
        """True when the pool has failed since it last answered (closed but counting, open or half-open)."""
        with self._lock:
            return self._failures > 0

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def check(self, pool_name: str) -> None:
        """Raise PoolUnavailable while open; after the pause one caller goes through as a probe."""
        with self._lock:
            now = self.clock()
            refusal = self._refusal(now)
            if refusal is not None:
                raise refusal
            if self._state(now) == "half-open":
                lease = self.probe_seconds if self.probe_seconds is not None else max(self.open_seconds, 1.0)
                self._probe_until = now + lease  # this caller is the probe

    def refusal(self) -> "PoolUnavailable | None":
        """What check() would raise right now, without becoming the probe (for callers that only peek)."""
        with self._lock:
            return self._refusal(self.clock())

    def _refusal(self, now: float) -> "PoolUnavailable | None":
        state = self._state(now)
        if state == "closed":
            return None
        reason = self.last_error or "is not answering"
        if state == "open":
            wait = max(1, round(self._open_until - now))
            return PoolUnavailable(f"{reason} ({self._failures} failures in a row; kiqboard tries it again in {wait} s)")
        if now < self._probe_until:
            return PoolUnavailable(f"{reason} (kiqboard is checking it again right now)")
        return None

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0
            self._probe_until = 0.0

    def record_failure(self, error: BaseException) -> None:
        if isinstance(error, PoolUnavailable) or not isinstance(error, CIRCUIT_ERRORS):
            return
        with self._lock:
            now = self.clock()
            before = self._state(now)
            self.last_error = describe_redis_error(error)
            self._failures += 1
            if self._failures >= self.failures_to_open:
                if before != "open":
                    self.times_opened += 1
                self._open_until = now + self.open_seconds
                self._probe_until = 0.0


class Bulkhead:
    """At most `limit` request threads of this process inside one pool's pages at a time.

    When every slot is taken, a caller waits up to `wait` seconds for one — but only while the pool looks healthy:
    a healthy pool answers in milliseconds and frees a slot soon, while a hung pool holds its slots for a socket
    timeout each. So when the pool has failed since it last answered (`shed=True`, the breaker's word), or the
    oldest request inside has been there longer than `slow_after` seconds, extra callers get PoolBusy at once
    instead of tying up the process's threads (and with them every other pool's pages) while the circuit breaker
    is still counting failures.
    """

    def __init__(self, limit: int = max(1, DEFAULT_THREADS // 2), wait: float = 1.0, slow_after: float = 0.5,
                 clock=time.monotonic) -> None:
        self.limit = limit
        self.wait = wait
        self.slow_after = slow_after
        self.clock = clock
        self._cond = threading.Condition()
        self._inside: dict[int, float] = {}  # token -> when it entered
        self._tokens = 0
        self.refused = 0

    @property
    def in_use(self) -> int:
        with self._cond:
            return len(self._inside)

    def acquire(self, shed: bool = False) -> int | None:
        """A token for release(), or None (refused)."""
        with self._cond:
            deadline = self.clock() + self.wait
            while len(self._inside) >= self.limit:
                now = self.clock()
                if shed or now >= deadline or now - min(self._inside.values()) > self.slow_after:
                    self.refused += 1
                    return None
                self._cond.wait(min(deadline - now, 0.02))
            self._tokens += 1
            self._inside[self._tokens] = self.clock()
            return self._tokens

    def release(self, token: int) -> None:
        with self._cond:
            if self._inside.pop(token, None) is not None:
                self._cond.notify()


def describe_redis_error(error: BaseException) -> str:
    if isinstance(error, PoolUnavailable):
        return str(error)
    if isinstance(error, redis.TimeoutError):
        return "is not answering (timed out)"
    if isinstance(error, redis.AuthenticationError):
        return "refused the password"
    if isinstance(error, redis.ConnectionError):
        if "No connection available" in str(error):  # BlockingConnectionPool: every connection stayed busy
            return "is not answering (every connection is busy)"
        return "cannot be reached"
    if isinstance(error, redis.ResponseError):
        return f"answered with an error: {str(error)[:200]}"
    return f"failed: {type(error).__name__}"


@dataclass
class Pool:
    settings: PoolSettings
    redis: redis.Redis = field(repr=False)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker, repr=False)
    bulkhead: Bulkhead = field(default_factory=Bulkhead, repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    @cached_property
    def reader(self) -> SidekiqReader:
        return SidekiqReader(self.redis, namespace=self.settings.namespace)

    @cached_property
    def actions(self) -> SidekiqActions:
        return SidekiqActions(
            self.redis,
            namespace=self.settings.namespace,
            dead_max_jobs=self.settings.dead_max_jobs,
            dead_timeout=self.settings.dead_timeout,
        )
