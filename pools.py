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

# Each gunicorn thread needs at most one connection per pool at a time (the overview reads pools from its own
# small thread pool, still one connection per pool per request). A blocking pool waits briefly instead of failing.
DEFAULT_MAX_CONNECTIONS = 10


def connect(settings: PoolSettings, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> redis.Redis:
    """A redis-py client with its own bounded connection pool. Options in the URL win over our defaults."""
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
    """Raised without touching Redis while a pool's circuit is open."""


class CircuitBreaker:
    """Fail fast for a while after repeated failures, so a dead pool costs nothing but its own pages.

    Per process on purpose: losing it on restart only means a few slow requests until it opens again.
    """

    def __init__(self, failures_to_open: int = 3, open_seconds: float = 10.0, clock=time.monotonic) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def check(self, pool_name: str) -> None:
        """Raise PoolUnavailable while open; after the pause one request goes through as a probe."""
        with self._lock:
            if self.clock() < self._open_until:
                raise PoolUnavailable(f"{self.last_error or 'not answering'} (retrying in a few seconds)")

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0

    def record_failure(self, error: BaseException) -> None:
        with self._lock:
            self.last_error = describe_redis_error(error)
            self._failures += 1
            if self._failures >= self.failures_to_open:
                self._open_until = self.clock() + self.open_seconds


def describe_redis_error(error: BaseException) -> str:
    if isinstance(error, PoolUnavailable):
        return str(error)
    if isinstance(error, redis.TimeoutError):
        return "not answering (timed out)"
    if isinstance(error, redis.AuthenticationError):
        return "refused the password"
    if isinstance(error, redis.ConnectionError):
        return "cannot be reached"
    if isinstance(error, redis.ResponseError):
        return f"answered with an error: {str(error)[:200]}"
    return f"failed: {type(error).__name__}"


@dataclass
class Pool:
    settings: PoolSettings
    redis: redis.Redis = field(repr=False)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker, repr=False)

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
