"""A pool: one Sidekiq app's Redis, as configured, with its reader and actions.

Pools are values handed to blueprint factories; nothing here is process-global.
"""

from __future__ import annotations

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


@dataclass
class Pool:
    settings: PoolSettings
    redis: redis.Redis = field(repr=False)

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
