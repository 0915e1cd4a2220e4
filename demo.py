"""Demo mode: three Sidekiq pools held in fakeredis, seeded with Sidekiq-shaped data and kept moving.

Everything written here is byte-for-byte what the named Sidekiq version writes (see
../shared/reference/sidekiq-web.md §1, §3, §9), so the demo exercises the same parsing paths as real clusters:

* ``storefront``     Sidekiq 8.1.7 / Rails 8: integer-millisecond job timestamps, strict base64 backtraces,
                     ``IDENTITY:work``, ``concurrency`` hash field, ``capsules`` in the process info,
                     ``Sidekiq::ActiveJob::Wrapper``, one embedded process on a web dyno, Pro's ``paused`` set.
* ``billing``        Sidekiq 6.4.1 / Rails 6.1 behind redis-namespace ``billing``: float-second timestamps,
                     newline-wrapped base64 backtraces, ``IDENTITY:workers``, the ActiveJob ``JobWrapper``.
* ``search-indexer`` Sidekiq 7.3.10 / Rails 7.1: float seconds, strict base64, ``IDENTITY:work``, ``weights``.

Wiring (app.py, demo mode only)::

    settings = demo.demo_pool_settings()                 # tuple[PoolSettings, ...]
    client = demo.demo_client(pool_settings)             # fakeredis.FakeRedis on its own FakeServer
    demo.seed(client, pool_settings)                     # writes the data (and remembers the pool's profile)
    simulator = demo.DemoSimulator([client, ...])        # or [(pool_settings, client), ...]
    app.before_request(simulator.start)                  # lazy, idempotent, fork-safe

``build_demo_pools()`` does the first three steps at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import random
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fakeredis

from config import PoolSettings

log = logging.getLogger("kiqboard.demo")

STATS_TTL = 5 * 365 * 24 * 60 * 60  # Sidekiq's STATS_TTL: daily counters live five years
PROCESS_TTL = 60
HISTORY_DAYS = 180
DEAD_TIMEOUT = 180 * 24 * 3600


# ----------------------------------------------------------------------------------------------------------------
# Profiles: what each demo pool runs


@dataclass(frozen=True)
class JobTemplate:
    klass: str  # the Sidekiq job class, or the ActiveJob class for kind "aj", or "Mailer#method" for kind "mailer"
    queue: str
    weight: float  # share of the pool's traffic
    args: Callable[[random.Random, str], list]  # (rng, app) -> job args (ActiveJob: the job's `arguments`)
    kind: str = "sidekiq"  # "sidekiq" | "aj" | "mailer"
    options: Mapping[str, Any] = field(default_factory=dict)  # sidekiq_options that land in the payload
    duration: float = 1.5  # mean seconds a run takes
    fail_rate: float = 0.01
    errors: tuple[str, ...] = ("timeout",)
    bid_rate: float = 0.0  # share of jobs that belong to a Pro batch
    schedule_rate: float = 0.0  # share pushed with `at` (perform_in) instead of straight to the queue


@dataclass(frozen=True)
class DynoSpec:
    hostname: str  # ENV["DYNO"] on Heroku
    concurrency: int
    queues: tuple[tuple[str, int], ...]  # (queue, weight); all-0 weights = strict order
    labels: tuple[str, ...] = ()
    embedded: bool = False
    quiet: bool = False  # seeded quiet (a deploy in progress)


@dataclass(frozen=True)
class DemoProfile:
    name: str
    number: int
    version: str  # Sidekiq version the pool "runs"
    rails: str
    ruby: str
    app: str  # GlobalID app name
    tag: str
    namespace: str | None
    queues: Mapping[str, tuple[float, int]]  # queue -> (seeded latency seconds, seeded size)
    paused: tuple[str, ...]
    dynos: tuple[DynoSpec, ...]
    jobs: tuple[JobTemplate, ...]
    rate: float  # jobs/second arriving (weekday average)
    retries: int  # seeded retry set size
    scheduled: int
    dead: int
    retry_cap: int = 600
    dead_cap: int = 400
    schedule_cap: int = 300
    queue_cap: int = 5000

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))

    @property
    def millis(self) -> bool:
        """Sidekiq 8 writes created_at/enqueued_at/failed_at/retried_at as integer epoch milliseconds."""
        return self.major >= 8

    @property
    def work_suffix(self) -> str:
        """`:workers` until 6.4.1, `:work` from 6.4.2 (commit e7d154ee)."""
        return ":workers" if self.version_tuple <= (6, 4, 1) else ":work"

    @property
    def strict_base64(self) -> bool:
        return self.major >= 7

    @property
    def wrapper_class(self) -> str:
        if self.major >= 8:
            return "Sidekiq::ActiveJob::Wrapper"
        return "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}" if self.namespace else name


def _gid(app: str, model: str, rng: random.Random, high: int = 900_000) -> dict:
    return {"_aj_globalid": f"gid://{app}/{model}/{rng.randint(1, high)}"}


def _mail(mailer: str, method: str, model: str, params: bool = False):
    def build(rng: random.Random, app: str) -> list:
        record = _gid(app, model, rng)
        if params:
            key = model.split("::")[-1].lower()
            tail = {"params": {key: record, "_aj_symbol_keys": [key]}, "args": [], "_aj_ruby2_keywords": ["params", "args"]}
        else:
            tail = {"args": [record], "_aj_ruby2_keywords": ["args"]}
        return [mailer, method, "deliver_now", tail]

    return build


def _hex(rng: random.Random, nbytes: int) -> str:
    return f"{rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


STOREFRONT = DemoProfile(
    name="storefront",
    number=1,
    version="8.1.7",
    rails="8.0.2",
    ruby="3.4.5",
    app="storefront",
    tag="storefront",
    namespace=None,
    queues={
        "critical": (0.4, 3),
        "default": (4.0, 60),
        "mailers": (1.5, 18),
        "active_storage_analysis": (12.0, 9),
        "low": (240.0, 340),
        "exports": (5400.0, 42),  # paused (Pro)
    },
    paused=("exports",),
    dynos=(
        DynoSpec("worker.1", 10, (("critical", 3), ("default", 2), ("mailers", 1), ("active_storage_analysis", 1)), ("heroku", "standard-2x")),
        DynoSpec("worker.2", 10, (("critical", 3), ("default", 2), ("mailers", 1), ("active_storage_analysis", 1)), ("heroku", "standard-2x")),
        DynoSpec("worker.3", 10, (("critical", 3), ("default", 2), ("mailers", 1), ("active_storage_analysis", 1)), ("heroku", "standard-2x"), quiet=True),
        DynoSpec("lowworker.1", 5, (("low", 0), ("exports", 0)), ("heroku", "performance-m")),
        DynoSpec("web.1", 2, (("critical", 0),), ("embedded",), embedded=True),
    ),
    jobs=(
        JobTemplate("Orders::ChargeJob", "critical", 6, lambda r, a: [r.randint(4_000_000, 4_999_999), f"pi_{_alnum(r, 24)}"],
                    options={"retry": 5, "backtrace": 20, "tags": ["payments"]}, duration=0.9, fail_rate=0.015,
                    errors=("stripe_card", "timeout", "deadlock")),
        JobTemplate("OrderConfirmationJob", "default", 10, lambda r, a: [_gid(a, "Order", r, 4_999_999)], kind="aj",
                    duration=0.6, errors=("not_found", "nil_method")),
        JobTemplate("Inventory::SyncSkuJob", "default", 14, lambda r, a: [f"SKU-{r.randint(10000, 99999)}-{r.choice('SMLX')}", r.randint(1, 12)],
                    options={"backtrace": 20, "tags": ["inventory", f"warehouse:{'sfo'}"]}, duration=1.8, fail_rate=0.02,
                    errors=("faraday", "timeout", "rate_limited"), bid_rate=0.3),
        JobTemplate("Webhooks::DeliverJob", "default", 8,
                    lambda r, a: [r.randint(1, 4000), r.choice(["order.created", "order.paid", "order.shipped", "refund.created"]), {"attempt": 1}],
                    options={"retry": 12, "backtrace": 10, "tags": ["webhooks"]}, duration=2.5, fail_rate=0.04,
                    errors=("faraday", "timeout", "ssl")),
        JobTemplate("OrderMailer#shipped", "mailers", 6, _mail("OrderMailer", "shipped", "Order"), kind="mailer",
                    duration=1.1, errors=("smtp", "not_found")),
        JobTemplate("UserMailer#password_reset", "mailers", 2, _mail("UserMailer", "password_reset", "User", params=True),
                    kind="mailer", duration=1.0, errors=("smtp",)),
        JobTemplate("ActiveStorage::AnalyzeJob", "active_storage_analysis", 4, lambda r, a: [_gid(a, "ActiveStorage::Blob", r)],
                    kind="aj", duration=3.0, errors=("vips", "not_found")),
        JobTemplate("CartAbandonmentJob", "low", 8, lambda r, a: [r.randint(1, 2_000_000)], options={"retry": 3},
                    duration=0.4, errors=("nil_method",), schedule_rate=0.6),
        JobTemplate("Search::ReindexProductJob", "low", 6, lambda r, a: [r.randint(1, 120_000)], options={"backtrace": 20},
                    duration=2.0, errors=("timeout",), bid_rate=0.5),
        JobTemplate("Reports::DailySalesExportJob", "exports", 0.2,
                    lambda r, a: [{"store_id": r.randint(1, 40), "date": "2025-01-01", "format": "csv"}], options={"retry": 2},
                    duration=900.0, errors=("s3", "timeout")),
    ),
    rate=7.0,
    retries=340,
    scheduled=120,
    dead=140,
)

BILLING = DemoProfile(
    name="billing",
    number=2,
    version="6.4.1",
    rails="6.1.7.10",
    ruby="3.0.7",
    app="billing",
    tag="billing",
    namespace="billing",
    queues={
        "payments": (0.8, 6),
        "invoices": (35.0, 120),
        "default": (3.0, 25),
        "mailers": (2.0, 14),
        "webhooks": (1.2, 11),
        "low": (600.0, 210),
    },
    paused=(),
    dynos=(
        DynoSpec("worker.1", 15, (("payments", 4), ("webhooks", 3), ("default", 2), ("mailers", 1), ("invoices", 1), ("low", 1)), ("heroku",)),
        DynoSpec("worker.2", 15, (("payments", 4), ("webhooks", 3), ("default", 2), ("mailers", 1), ("invoices", 1), ("low", 1)), ("heroku",)),
        DynoSpec("invoicer.1", 8, (("invoices", 0), ("low", 0)), ("heroku", "pdf")),
    ),
    jobs=(
        JobTemplate("StripeWebhookWorker", "webhooks", 10, lambda r, a: [f"evt_{_alnum(r, 24)}", r.choice(["invoice.paid", "charge.succeeded", "customer.subscription.updated", "invoice.payment_failed"])],
                    options={"retry": 10, "backtrace": True}, duration=0.5, fail_rate=0.01, errors=("stripe_api", "deadlock")),
        JobTemplate("Payments::CaptureWorker", "payments", 6, lambda r, a: [r.randint(100_000, 999_999)],
                    options={"retry": 8, "backtrace": 25, "tags": ["payments", "stripe"]}, duration=1.2, fail_rate=0.03,
                    errors=("stripe_card", "stripe_api", "timeout")),
        JobTemplate("Invoices::GeneratePdfJob", "invoices", 6, lambda r, a: [_gid(a, "Invoice", r), {"locale": r.choice(["en", "de", "fr"]), "_aj_symbol_keys": ["locale"]}],
                    kind="aj", duration=6.0, fail_rate=0.012, errors=("wicked_pdf", "not_found"), bid_rate=0.7),
        JobTemplate("DunningReminderJob", "default", 3, lambda r, a: [_gid(a, "Subscription", r), r.randint(1, 4)], kind="aj",
                    duration=0.7, errors=("nil_method",), schedule_rate=0.7),
        JobTemplate("InvoiceMailer#receipt", "mailers", 5, _mail("InvoiceMailer", "receipt", "Invoice"), kind="mailer",
                    duration=1.4, errors=("smtp",)),
        JobTemplate("Subscriptions::RenewalWorker", "default", 4, lambda r, a: [r.randint(1, 80_000)],
                    options={"backtrace": True}, duration=1.6, fail_rate=0.02, errors=("stripe_card", "deadlock"), schedule_rate=0.3, bid_rate=0.6),
        JobTemplate("Accounting::QuickbooksSyncWorker", "low", 3, lambda r, a: [r.randint(1, 3000), "2025-Q1"],
                    options={"retry": 25, "backtrace": 15}, duration=8.0, fail_rate=0.05, errors=("faraday", "rate_limited", "timeout")),
    ),
    rate=2.5,
    retries=220,
    scheduled=90,
    dead=95,
)

SEARCH_INDEXER = DemoProfile(
    name="search-indexer",
    number=3,
    version="7.3.10",
    rails="7.1.5.1",
    ruby="3.3.6",
    app="catalog",
    tag="search-indexer",
    namespace=None,
    queues={
        "realtime": (0.6, 12),
        "indexing": (20.0, 480),
        "reindex": (1800.0, 900),
        "default": (2.0, 8),
    },
    paused=(),
    dynos=(
        DynoSpec("indexer.1", 20, (("realtime", 0), ("indexing", 0), ("default", 0)), ("heroku", "performance-l")),
        DynoSpec("indexer.2", 20, (("realtime", 0), ("indexing", 0), ("default", 0)), ("heroku", "performance-l")),
        DynoSpec("indexer.3", 20, (("realtime", 0), ("indexing", 0), ("default", 0)), ("heroku", "performance-l")),
        DynoSpec("bulk.1", 12, (("reindex", 1), ("indexing", 1)), ("heroku", "bulk")),
    ),
    jobs=(
        JobTemplate("Searchkick::ReindexV2Job", "realtime", 12, lambda r, a: [r.choice(["Product", "Brand", "Category"]), str(r.randint(1, 250_000)), None, {"routing": None, "_aj_symbol_keys": ["routing"]}],
                    kind="aj", duration=0.3, fail_rate=0.006, errors=("es_429", "es_timeout")),
        JobTemplate("Indexer::IndexDocumentWorker", "indexing", 16, lambda r, a: ["products_v7", r.randint(1, 250_000)],
                    options={"backtrace": 12, "tags": ["es"]}, duration=0.8, fail_rate=0.01, errors=("es_429", "es_timeout", "not_found")),
        JobTemplate("Indexer::BulkReindexWorker", "reindex", 5, lambda r, a: ["products_v8", r.randint(0, 2499) * 100, 100],
                    options={"retry": 10, "backtrace": 12, "tags": ["es", "bulk"]}, duration=6.0, fail_rate=0.02,
                    errors=("es_429", "es_timeout"), bid_rate=1.0),
        JobTemplate("SynonymsRefreshJob", "default", 0.5, lambda r, a: [], kind="aj", duration=4.0, errors=("es_timeout",), schedule_rate=1.0),
    ),
    rate=11.0,
    retries=480,
    scheduled=60,
    dead=180,
    retry_cap=800,
)

DEMO_PROFILES: dict[str, DemoProfile] = {p.name: p for p in (STOREFRONT, BILLING, SEARCH_INDEXER)}

# client -> profile, remembered by seed() so DemoSimulator([client, ...]) needs nothing else.
_PROFILES_BY_CLIENT: "weakref.WeakKeyDictionary[Any, DemoProfile]" = weakref.WeakKeyDictionary()


def demo_pool_settings() -> tuple[PoolSettings, ...]:
    """The demo pools as PoolSettings (numbers 1..3; url is a label only, nothing connects to it)."""
    return tuple(
        PoolSettings(number=p.number, name=p.name, url=f"redis://demo.invalid:6379/{p.number - 1}", namespace=p.namespace)
        for p in DEMO_PROFILES.values()
    )


def profile_for(pool: DemoProfile | PoolSettings | str) -> DemoProfile:
    if isinstance(pool, DemoProfile):
        return pool
    name = pool.name if isinstance(pool, PoolSettings) else str(pool)
    try:
        return DEMO_PROFILES[name]
    except KeyError:
        raise KeyError(f"no demo profile named {name!r} (known: {', '.join(DEMO_PROFILES)})") from None


def demo_client(pool: DemoProfile | PoolSettings | str, *, server: fakeredis.FakeServer | None = None,
                decode_responses: bool = False) -> fakeredis.FakeRedis:
    """A fakeredis client on its own FakeServer (Lua works through lupa). Bytes responses, like the real clients."""
    profile = profile_for(pool)
    client = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=decode_responses)
    _PROFILES_BY_CLIENT[client] = profile
    return client


def build_demo_pools(now: float | None = None) -> list[tuple[PoolSettings, fakeredis.FakeRedis]]:
    """Settings + seeded client for every demo pool."""
    pools = []
    for settings in demo_pool_settings():
        client = demo_client(settings)
        seed(client, settings, now=now)
        pools.append((settings, client))
    return pools


# ----------------------------------------------------------------------------------------------------------------
# Sidekiq encodings


def dump_json(value: Any) -> str:
    """Sidekiq.dump_json: compact, UTF-8 kept, shortest float repr (like Ruby's Float#to_s)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_stamp(profile: DemoProfile, seconds: float) -> int | float:
    """A job timestamp in the pool's format: int epoch ms (8.x) or float epoch s with Ruby's µs-ish precision."""
    if profile.millis:
        return int(seconds * 1000)
    return round(seconds, 6)


def compress_backtrace(profile: DemoProfile, lines: list[str]) -> str:
    """JobRetry#compress_backtrace: base64(zlib(JSON)); Base64.encode64 (60-char lines + "\\n") before 7.x, m0 after."""
    compressed = zlib.compress(dump_json(lines).encode("utf-8"))
    encoded = base64.b64encode(compressed).decode("ascii")
    if profile.strict_base64:
        return encoded
    return "".join(encoded[i:i + 60] + "\n" for i in range(0, len(encoded), 60))


def _iso8601(seconds: float, fraction: bool) -> str:
    stamp = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if fraction:  # Rails 7.1+: iso8601(9)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}000Z"
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------------------------
# Errors and backtraces


@dataclass(frozen=True)
class _Error:
    klass: str
    message: Callable[[random.Random, "DemoProfile"], str]
    frames: tuple[tuple[str, int, str | None, str], ...]  # (path, line, owner, method): innermost first


def _gem(profile: DemoProfile, gem: str, path: str) -> str:
    abi = ".".join(profile.ruby.split(".")[:2]) + ".0"
    return f"/app/vendor/bundle/ruby/{abi}/gems/{gem}/lib/{path}"


def _stdlib(profile: DemoProfile, path: str) -> str:
    abi = ".".join(profile.ruby.split(".")[:2]) + ".0"
    return f"/app/vendor/ruby-{profile.ruby}/lib/ruby/{abi}/{path}"


ERRORS: dict[str, Callable[[DemoProfile], _Error]] = {
    "timeout": lambda p: _Error("Net::ReadTimeout", lambda r, p: "Net::ReadTimeout with #<TCPSocket:(closed)>", (
        (_stdlib(p, "net/protocol.rb"), 229, "Net::BufferedIO", "rbuf_fill"),
        (_stdlib(p, "net/protocol.rb"), 199, "Net::BufferedIO", "readuntil"),
        (_stdlib(p, "net/http/response.rb"), 42, "Net::HTTPResponse.read_new", "read_status_line"),
        (_stdlib(p, "net/http.rb"), 2342, "Net::HTTP", "transport_request"),
        (_stdlib(p, "net/http.rb"), 2296, "Net::HTTP", "request"),
    )),
    "faraday": lambda p: _Error("Faraday::ConnectionFailed", lambda r, p: f"Failed to open TCP connection to {r.choice(['api.shipbob.com', 'hooks.partner-erp.com', 'quickbooks.api.intuit.com'])}:443 (execution expired)", (
        (_gem(p, "faraday-net_http-3.1.0", "faraday/adapter/net_http.rb"), 66, "Faraday::Adapter::NetHttp", "rescue in call"),
        (_gem(p, "faraday-net_http-3.1.0", "faraday/adapter/net_http.rb"), 45, "Faraday::Adapter::NetHttp", "call"),
        (_gem(p, "faraday-2.9.0", "faraday/rack_builder.rb"), 152, "Faraday::RackBuilder", "build_response"),
        (_gem(p, "faraday-2.9.0", "faraday/connection.rb"), 444, "Faraday::Connection", "run_request"),
        (_gem(p, "faraday-2.9.0", "faraday/connection.rb"), 280, "Faraday::Connection", "post"),
    )),
    "rate_limited": lambda p: _Error("Faraday::TooManyRequestsError", lambda r, p: "the server responded with status 429", (
        (_gem(p, "faraday-2.9.0", "faraday/response/raise_error.rb"), 38, "Faraday::Response::RaiseError", "on_complete"),
        (_gem(p, "faraday-2.9.0", "faraday/middleware.rb"), 18, "Faraday::Middleware", "block in call"),
        (_gem(p, "faraday-2.9.0", "faraday/response.rb"), 42, "Faraday::Response", "on_complete"),
        (_gem(p, "faraday-2.9.0", "faraday/connection.rb"), 444, "Faraday::Connection", "run_request"),
    )),
    "ssl": lambda p: _Error("OpenSSL::SSL::SSLError", lambda r, p: "SSL_connect returned=1 errno=0 peeraddr=203.0.113.7:443 state=error: certificate verify failed (certificate has expired)", (
        (_stdlib(p, "net/protocol.rb"), 46, "Net::Protocol", "connect_nonblock"),
        (_stdlib(p, "net/protocol.rb"), 46, "Net::Protocol", "ssl_socket_connect"),
        (_stdlib(p, "net/http.rb"), 1742, "Net::HTTP", "connect"),
        (_stdlib(p, "net/http.rb"), 1636, "Net::HTTP", "do_start"),
    )),
    "deadlock": lambda p: _Error("ActiveRecord::Deadlocked", lambda r, p: "PG::TRDeadlockDetected: ERROR:  deadlock detected\nDETAIL:  Process 1181 waits for ShareLock on transaction 88131; blocked by process 1213.\n", (
        (_gem(p, f"activerecord-{p.rails}", "active_record/connection_adapters/postgresql/database_statements.rb"), 57, "ActiveRecord::ConnectionAdapters::PostgreSQL::DatabaseStatements", "exec_params"),
        (_gem(p, f"activerecord-{p.rails}", "active_record/connection_adapters/abstract_adapter.rb"), 1028, "ActiveRecord::ConnectionAdapters::AbstractAdapter", "block in with_raw_connection"),
        (_gem(p, f"activesupport-{p.rails}", "active_support/concurrency/null_lock.rb"), 9, "ActiveSupport::Concurrency::NullLock", "synchronize"),
        (_gem(p, f"activerecord-{p.rails}", "active_record/persistence.rb"), 1114, "ActiveRecord::Persistence", "_update_row"),
    )),
    "not_found": lambda p: _Error("ActiveRecord::RecordNotFound", lambda r, p: f"Couldn't find {r.choice(['Order', 'Invoice', 'Product', 'User'])} with 'id'={r.randint(1, 900_000)}", (
        (_gem(p, f"activerecord-{p.rails}", "active_record/core.rb"), 253, "ActiveRecord::Core::ClassMethods", "find"),
        (_gem(p, "globalid-1.2.1", "global_id/locator.rb"), 205, "GlobalID::Locator::UnscopedLocator", "locate"),
        (_gem(p, "globalid-1.2.1", "global_id/locator.rb"), 31, "GlobalID::Locator", "locate"),
        (_gem(p, f"activejob-{p.rails}", "active_job/arguments.rb"), 146, "ActiveJob::Arguments", "deserialize_global_id"),
    )),
    "nil_method": lambda p: _Error("NoMethodError", lambda r, p: (
        "undefined method 'email' for nil" if p.ruby >= "3.4" else "undefined method `email' for nil:NilClass"), (
        ("/app/app/models/customer.rb", 88, "Customer", "contact_address"),
    )),
    "stripe_card": lambda p: _Error("Stripe::CardError", lambda r, p: r.choice(["Your card was declined.", "Your card has insufficient funds.", "Your card has expired."]), (
        (_gem(p, "stripe-10.12.0", "stripe/stripe_client.rb"), 911, "Stripe::StripeClient", "handle_error_response"),
        (_gem(p, "stripe-10.12.0", "stripe/stripe_client.rb"), 566, "Stripe::StripeClient", "execute_request_with_rescues"),
        (_gem(p, "stripe-10.12.0", "stripe/api_operations/request.rb"), 94, "Stripe::APIOperations::Request::ClassMethods", "execute_resource_request"),
    )),
    "stripe_api": lambda p: _Error("Stripe::APIConnectionError", lambda r, p: "Unexpected error communicating when trying to connect to Stripe. You may be seeing this message because your DNS is not working or you don't have an internet connection.  To check, try running `host stripe.com' from the command line.\n\n(Network error: Net::OpenTimeout: execution expired)", (
        (_gem(p, "stripe-10.12.0", "stripe/stripe_client.rb"), 640, "Stripe::StripeClient", "execute_request_with_rescues"),
        (_gem(p, "stripe-10.12.0", "stripe/stripe_client.rb"), 213, "Stripe::StripeClient", "execute_request"),
    )),
    "smtp": lambda p: _Error("Net::SMTPServerBusy", lambda r, p: "421 4.7.0 Try again later, closing connection.", (
        (_stdlib(p, "net/smtp.rb"), 1086, "Net::SMTP::Response", "check_response"),
        (_stdlib(p, "net/smtp.rb"), 1058, "Net::SMTP", "getok"),
        (_gem(p, "mail-2.8.1", "mail/network/delivery_methods/smtp_connection.rb"), 53, "Mail::SMTPConnection", "deliver!"),
        (_gem(p, f"actionmailer-{p.rails}", "action_mailer/message_delivery.rb"), 126, "ActionMailer::MessageDelivery", "deliver_now"),
    )),
    "vips": lambda p: _Error("Vips::Error", lambda r, p: "VipsJpeg: Premature end of input file", (
        (_gem(p, "ruby-vips-2.2.1", "vips/image.rb"), 234, "Vips::Image", "write_to_memory"),
        (_gem(p, f"activestorage-{p.rails}", "active_storage/analyzer/image_analyzer/vips.rb"), 20, "ActiveStorage::Analyzer::ImageAnalyzer::Vips", "metadata"),
    )),
    "s3": lambda p: _Error("Aws::S3::Errors::ServiceUnavailable", lambda r, p: "Please reduce your request rate.", (
        (_gem(p, "aws-sdk-core-3.191.0", "seahorse/client/plugins/raise_response_errors.rb"), 17, "Seahorse::Client::Plugins::RaiseResponseErrors::Handler", "call"),
        (_gem(p, "aws-sdk-s3-1.143.0", "aws-sdk-s3/plugins/sse_cpk.rb"), 24, "Aws::S3::Plugins::SseCpk::Handler", "call"),
    )),
    "wicked_pdf": lambda p: _Error("RuntimeError", lambda r, p: "Failed to execute:\n[\"/app/bin/wkhtmltopdf\", \"-q\", \"file:////tmp/wicked_pdf20250101-4-1x2y3z.html\", \"/tmp/wicked_pdf_generated_file20250101-4-9q8w7e.pdf\"]\nError: PDF could not be generated!\n Command Error: Exit with code 1 due to network error: ContentNotFoundError", (
        (_gem(p, "wicked_pdf-2.8.0", "wicked_pdf.rb"), 80, "WickedPdf", "pdf_from_string"),
        (_gem(p, "wicked_pdf-2.8.0", "wicked_pdf/pdf_helper.rb"), 109, "WickedPdf::PdfHelper", "make_pdf"),
    )),
    "es_429": lambda p: _Error("Elastic::Transport::Transport::Errors::TooManyRequests", lambda r, p: "[429] {\"error\":{\"root_cause\":[{\"type\":\"es_rejected_execution_exception\",\"reason\":\"rejected execution of coordinating operation [shard_detail=[products_v7][3][P], shard_coordinating_and_primary_bytes=0, shard_operation_bytes=98764] OR [node_coordinating_and_primary_bytes=0, node_replica_bytes=0, node_all_bytes=0, node_operation_bytes=98764, max_coordinating_and_primary_bytes=107374182]\"}],\"type\":\"es_rejected_execution_exception\"},\"status\":429}", (
        (_gem(p, "elastic-transport-8.3.5", "elastic/transport/transport/base.rb"), 231, "Elastic::Transport::Transport::Base", "__raise_transport_error"),
        (_gem(p, "elastic-transport-8.3.5", "elastic/transport/transport/base.rb"), 355, "Elastic::Transport::Transport::Base", "perform_request"),
        (_gem(p, "elastic-transport-8.3.5", "elastic/transport/transport/http/faraday.rb"), 37, "Elastic::Transport::Transport::HTTP::Faraday", "perform_request"),
        (_gem(p, "elasticsearch-api-8.13.0", "elasticsearch/api/actions/bulk.rb"), 64, "Elasticsearch::API::Actions", "bulk"),
    )),
    "es_timeout": lambda p: _Error("Faraday::TimeoutError", lambda r, p: "Net::ReadTimeout with #<TCPSocket:(closed)>", (
        (_gem(p, "faraday-net_http-3.1.0", "faraday/adapter/net_http.rb"), 70, "Faraday::Adapter::NetHttp", "rescue in call"),
        (_gem(p, "elastic-transport-8.3.5", "elastic/transport/transport/http/faraday.rb"), 37, "Elastic::Transport::Transport::HTTP::Faraday", "perform_request"),
    )),
}


def _frame(profile: DemoProfile, path: str, line: int, owner: str | None, method: str) -> str:
    if profile.ruby >= "3.4":  # Ruby 3.4: 'Klass#method' in straight quotes
        label = f"{owner}#{method}" if owner else method
        if method.startswith(("block in ", "rescue in ")):
            prefix, _, name = method.partition(" in ")
            label = f"{prefix} in {owner}#{name}" if owner else method
        return f"{path}:{line}:in '{label}'"
    return f"{path}:{line}:in `{method}'"


def _sidekiq_frames(profile: DemoProfile) -> list[tuple[str, int, str | None, str]]:
    gem = f"sidekiq-{profile.version}"
    return [
        (_gem(profile, gem, "sidekiq/processor.rb"), 220 if profile.major >= 8 else 196, "Sidekiq::Processor", "execute_job"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 185 if profile.major >= 8 else 164, "Sidekiq::Processor", "block (2 levels) in process"),
        (_gem(profile, gem, "sidekiq/middleware/chain.rb"), 180 if profile.major >= 7 else 133, "Sidekiq::Middleware::Chain", "traverse"),
        (_gem(profile, gem, "sidekiq/middleware/chain.rb"), 183 if profile.major >= 7 else 133, "Sidekiq::Middleware::Chain", "invoke"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 184 if profile.major >= 8 else 163, "Sidekiq::Processor", "block in process"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 145 if profile.major >= 8 else 136, "Sidekiq::Processor", "block (6 levels) in dispatch"),
        (_gem(profile, gem, "sidekiq/job_retry.rb"), 118 if profile.major >= 7 else 114, "Sidekiq::JobRetry", "local"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 144 if profile.major >= 8 else 135, "Sidekiq::Processor", "block (5 levels) in dispatch"),
        (_gem(profile, gem, "sidekiq/rails.rb"), 18 if profile.major >= 7 else 14, "Sidekiq::Rails::Reloader", "block in call"),
        (_gem(profile, f"activesupport-{profile.rails}", "active_support/execution_wrapper.rb"), 91, "ActiveSupport::ExecutionWrapper", "wrap"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 263 if profile.major >= 8 else 250, "Sidekiq::Processor", "stats"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 139 if profile.major >= 8 else 130, "Sidekiq::Processor", "dispatch"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 184 if profile.major >= 8 else 162, "Sidekiq::Processor", "process"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 86 if profile.major >= 8 else 78, "Sidekiq::Processor", "process_one"),
        (_gem(profile, gem, "sidekiq/processor.rb"), 76 if profile.major >= 8 else 68, "Sidekiq::Processor", "run"),
        (_gem(profile, gem, "sidekiq/component.rb" if profile.major >= 7 else "sidekiq/util.rb"), 10 if profile.major >= 7 else 43, "Sidekiq::Component", "watchdog"),
        (_gem(profile, gem, "sidekiq/component.rb" if profile.major >= 7 else "sidekiq/util.rb"), 19 if profile.major >= 7 else 54, "Sidekiq::Component", "block in safe_thread"),
    ]


def _app_frames(template: JobTemplate) -> list[tuple[str, int, str | None, str]]:
    if template.kind == "mailer":
        mailer, method = template.klass.split("#")
        return [(f"/app/app/mailers/{_underscore(mailer)}.rb", 14, mailer, method)]
    path = "/app/app/jobs/" if template.kind == "aj" else "/app/app/sidekiq/"
    klass = template.klass
    if "::" in klass and klass.split("::")[0] in ("ActiveStorage", "Searchkick"):
        return []
    service = klass.replace("Job", "").replace("Worker", "")
    return [
        (f"/app/app/services/{_underscore(service)}.rb", 31, service, "call"),
        (f"{path}{_underscore(klass)}.rb", 12, klass, "perform"),
    ]


def _active_job_frames(profile: DemoProfile) -> list[tuple[str, int, str | None, str]]:
    aj = f"activejob-{profile.rails}"
    frames = [
        (_gem(profile, aj, "active_job/execution.rb"), 68, "ActiveJob::Execution", "block in _perform_job"),
        (_gem(profile, f"activesupport-{profile.rails}", "active_support/callbacks.rb"), 121, "ActiveSupport::Callbacks", "block in run_callbacks"),
        (_gem(profile, aj, "active_job/execution.rb"), 48, "ActiveJob::Execution", "perform_now"),
        (_gem(profile, aj, "active_job/execution.rb"), 26, "ActiveJob::Execution::ClassMethods", "execute"),
    ]
    if profile.major >= 8:
        frames.append((_gem(profile, f"sidekiq-{profile.version}", "active_job/queue_adapters/sidekiq_adapter.rb"), 24, "Sidekiq::ActiveJob::Wrapper", "perform"))
    else:
        frames.append((_gem(profile, aj, "active_job/queue_adapters/sidekiq_adapter.rb"), 42, "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "perform"))
    return frames


def _underscore(name: str) -> str:
    out = []
    for part in name.split("::"):
        chars = []
        for i, ch in enumerate(part):
            if ch.isupper() and i and (not part[i - 1].isupper()):
                chars.append("_")
            chars.append(ch.lower())
        out.append("".join(chars))
    return "/".join(out)


_BACKTRACES: dict[tuple, tuple[str, ...]] = {}


def backtrace_lines(profile: DemoProfile, template: JobTemplate, error: _Error) -> list[str]:
    """exception.backtrace as the pool's Ruby prints it: library frames, the app's, ActiveJob's, Sidekiq's."""
    cache_key = (profile.name, profile.version, profile.ruby, template.klass, template.kind, error.frames)
    lines = _BACKTRACES.get(cache_key)
    if lines is None:
        frames = list(error.frames) + _app_frames(template)
        if template.kind in ("aj", "mailer"):
            frames += _active_job_frames(profile)
        frames += _sidekiq_frames(profile)
        lines = _BACKTRACES[cache_key] = tuple(_frame(profile, *f) for f in frames)
    return list(lines)


# ----------------------------------------------------------------------------------------------------------------
# Job payloads


def _tid(rng: random.Random) -> str:
    """Processor#tid: (Thread.current.object_id ^ pid).to_s(36)."""
    n = rng.randint(36 ** 3, 36 ** 5)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, rem = divmod(n, 36)
        out = digits[rem] + out
    return out


def _pick(rng: random.Random, profile: DemoProfile, queue: str | None = None) -> JobTemplate:
    jobs = [j for j in profile.jobs if queue is None or j.queue == queue]
    return rng.choices(jobs, weights=[j.weight for j in jobs])[0]


def new_job(profile: DemoProfile, template: JobTemplate, rng: random.Random, created: float,
            enqueued: float | None, at: float | None = None) -> dict:
    """A job hash as Client#push stores it (enqueued=None: a scheduled job, which has no enqueued_at)."""
    item: dict[str, Any] = {"retry": True, "queue": template.queue}
    item.update({k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in template.options.items()})
    if template.kind in ("aj", "mailer"):
        job_class = "ActionMailer::MailDeliveryJob" if template.kind == "mailer" else template.klass
        serialized: dict[str, Any] = {
            "job_class": job_class,
            "job_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "provider_job_id": None,
            "queue_name": template.queue,
            "priority": None,
            "arguments": template.args(rng, profile.app),
            "executions": 0,
            "exception_executions": {},
            "locale": "en",
            "timezone": "UTC",
            "enqueued_at": _iso8601(created, fraction=profile.rails >= "7.1"),
        }
        if profile.rails >= "7.1":
            serialized["scheduled_at"] = None if at is None else _iso8601(at, True)
        item.update({"class": profile.wrapper_class, "wrapped": job_class, "args": [serialized]})
    else:
        item.update({"class": template.klass, "args": template.args(rng, profile.app)})
    if template.bid_rate and rng.random() < template.bid_rate:
        item["bid"] = base64.urlsafe_b64encode(rng.getrandbits(80).to_bytes(10, "big")).decode().rstrip("=")
    item["jid"] = _hex(rng, 12)
    item["created_at"] = job_stamp(profile, created)
    if enqueued is not None:
        item["enqueued_at"] = job_stamp(profile, enqueued)
    return item


def template_of(profile: DemoProfile, item: Mapping[str, Any]) -> JobTemplate | None:
    klass = item.get("wrapped") or item.get("class")
    for template in profile.jobs:
        if template.kind == "mailer":
            if klass == "ActionMailer::MailDeliveryJob":
                try:
                    args = item["args"][0]["arguments"]
                    if f"{args[0]}#{args[1]}" == template.klass:
                        return template
                except (KeyError, IndexError, TypeError):
                    continue
        elif template.klass == klass:
            return template
    return None


def _max_retries(item: Mapping[str, Any]) -> int:
    retry = item.get("retry", True)
    if retry is True:
        return 25
    if retry is False or retry is None:
        return 0
    try:
        return int(retry)
    except (TypeError, ValueError):
        return 25


def retry_delay(rng: random.Random, count: int) -> float:
    """JobRetry#delay_for default: count**4 + 15 + rand(10 * (count + 1))."""
    return count ** 4 + 15 + rng.randrange(10 * (count + 1))


def fail_job(profile: DemoProfile, rng: random.Random, item: dict, template: JobTemplate | None, at: float) -> dict:
    """JobRetry#attempt_retry's changes to the job hash (in place, preserving Ruby's key order)."""
    template = template or profile.jobs[0]
    error = ERRORS[rng.choice(template.errors)](profile)
    item["queue"] = item.get("retry_queue") or item.get("queue") or template.queue
    item["error_message"] = error.message(rng, profile)
    item["error_class"] = error.klass
    if "retry_count" in item:
        item["retried_at"] = job_stamp(profile, at)
        item["retry_count"] = int(item["retry_count"]) + 1
    else:
        item["failed_at"] = job_stamp(profile, at)
        item["retry_count"] = 0
    backtrace = item.get("backtrace")
    if backtrace:
        lines = backtrace_lines(profile, template, error)
        if backtrace is not True:
            lines = lines[: int(backtrace)]
        item["error_backtrace"] = compress_backtrace(profile, lines)
    return item


# ----------------------------------------------------------------------------------------------------------------
# Processes


def process_info(profile: DemoProfile, dyno: DynoSpec, identity: str, pid: int, started_at: float) -> dict:
    """Launcher#to_data for the pool's Sidekiq version."""
    queues = [q for q, _ in dyno.queues]
    weights = {q: w for q, w in dyno.queues}
    info: dict[str, Any] = {"hostname": dyno.hostname, "started_at": started_at, "pid": pid, "tag": profile.tag}
    if profile.major >= 8:
        values = set(weights.values())
        mode = "strict" if values == {0} else ("random" if values == {1} else "weighted")
        info["capsules"] = {"default": {"concurrency": dyno.concurrency, "mode": mode, "weights": weights}}
        info["queues"] = queues
        info["weights"] = [weights]
    else:
        info["concurrency"] = dyno.concurrency
        info["queues"] = queues
        if profile.major >= 7:
            info["weights"] = [weights]
    info["labels"] = list(dyno.labels)
    info["identity"] = identity
    if profile.major >= 7:
        info["version"] = profile.version
        info["embedded"] = dyno.embedded
    return info


def _new_identity(rng: random.Random, dyno: DynoSpec) -> tuple[str, int]:
    pid = rng.randint(3, 40)
    return f"{dyno.hostname}:{pid}:{_hex(rng, 6)}", pid


def _heartbeat(pipe, profile: DemoProfile, identity: str, info_json: str, work: Mapping[str, str], quiet: bool,
               rss: int, rtt: int, concurrency: int, now: float) -> None:
    """Launcher#❤: replace the work hash, then SADD processes + HSET the identity hash, both with EXPIRE 60."""
    work_key = profile.key(identity + profile.work_suffix)
    pipe.unlink(work_key)
    if work:
        pipe.hset(work_key, mapping=dict(work))
    pipe.expire(work_key, PROCESS_TTL)
    pipe.sadd(profile.key("processes"), identity)
    fields: dict[str, Any] = {"info": info_json}
    if profile.version_tuple >= (8, 1, 2):
        fields["concurrency"] = concurrency
    fields.update({"busy": len(work), "beat": repr(now), "rtt_us": rtt, "quiet": "true" if quiet else "false", "rss": rss})
    pipe.hset(profile.key(identity), mapping=fields)
    pipe.expire(profile.key(identity), PROCESS_TTL)


def _work_entry(queue: str, payload: str, run_at: float) -> str:
    """Processor#stats: {queue:, payload: jobstr, run_at: Time.now.to_i}."""
    return dump_json({"queue": queue, "payload": payload, "run_at": int(run_at)})


# ----------------------------------------------------------------------------------------------------------------
# Seeding


def _history(profile: DemoProfile, rng: random.Random, today: dt.date, day_fraction: float) -> list[tuple[dt.date, int, int]]:
    """(date, processed, failed) for today and the 180 days before: weekday/weekend rhythm, growth, incidents."""
    rows = []
    incidents = {rng.randrange(3, HISTORY_DAYS) for _ in range(3)}
    spikes = {rng.randrange(7, HISTORY_DAYS) for _ in range(2)}
    for age in range(HISTORY_DAYS + 1):
        day = today - dt.timedelta(days=age)
        weekday = day.weekday()
        rhythm = (1.0, 1.06, 1.04, 1.02, 0.93, 0.52, 0.46)[weekday]
        growth = 1.0 - 0.25 * age / HISTORY_DAYS
        volume = profile.rate * 86400 * rhythm * growth * rng.uniform(0.93, 1.07)
        if age in spikes:
            volume *= rng.uniform(1.8, 2.6)
        failure_rate = rng.uniform(0.003, 0.009)
        if age in incidents:
            failure_rate *= rng.uniform(8, 20)
        if age == 0:
            volume *= day_fraction
        processed = int(volume)
        rows.append((day, processed, int(processed * failure_rate)))
    return rows


def _failed(profile: DemoProfile, rng: random.Random, job: dict, template: JobTemplate, first: float, last: float,
            count: int) -> None:
    """The job after `count + 1` failures: the first at `first`, the latest at `last` (what attempt_retry leaves)."""
    fail_job(profile, rng, job, template, first)
    if count:
        job["retry_count"] = count - 1
        fail_job(profile, rng, job, template, last)


def seed(client, pool: DemoProfile | PoolSettings | str | None = None, now: float | None = None,
         rng: random.Random | None = None) -> None:
    """Replace the client's data with a Sidekiq-shaped keyspace for the pool (FLUSHDB first: demo servers only)."""
    profile = profile_for(pool) if pool is not None else _PROFILES_BY_CLIENT[client]
    _PROFILES_BY_CLIENT[client] = profile
    now = time.time() if now is None else float(now)
    rng = rng or random.Random(f"kiqboard-demo-{profile.name}")
    k = profile.key
    pipe = client.pipeline(transaction=False)
    pipe.flushdb()

    # -- stats and 180 days of history ---------------------------------------------------------------------------
    today_start = math.floor(now / 86400) * 86400
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    rows = _history(profile, rng, today, (now - today_start) / 86400)
    total_processed = total_failed = 0
    for day, processed, failed in rows:
        age = now - dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()
        ttl = max(1, int(STATS_TTL - max(0.0, age)))
        pipe.set(k(f"stat:processed:{day.isoformat()}"), processed, ex=ttl)
        pipe.set(k(f"stat:failed:{day.isoformat()}"), failed, ex=ttl)
        total_processed += processed
        total_failed += failed
    lifetime = rng.uniform(1.5, 3.0)  # the pool is older than the history window
    pipe.set(k("stat:processed"), int(total_processed * lifetime))
    pipe.set(k("stat:failed"), int(total_failed * lifetime))

    # -- queues ---------------------------------------------------------------------------------------------------
    for queue, (latency, size) in profile.queues.items():
        pipe.sadd(k("queues"), queue)
        stamps = sorted(now - latency * (1 - i / max(1, size)) ** 1.3 for i in range(size))
        stamps[0] = now - latency  # the tail job defines the latency
        members = []
        for enqueued in stamps:  # oldest first, so it ends at the tail (-1), newest at the head (0)
            template = _pick(rng, profile, queue)
            members.append(dump_json(new_job(profile, template, rng, enqueued - rng.uniform(0, 0.05), enqueued)))
        if members:
            pipe.lpush(k(f"queue:{queue}"), *members)
    for queue in profile.paused:
        pipe.sadd(k("paused"), queue)

    # -- retries: hundreds, spread over the exponential backoff ----------------------------------------------------
    retryable = [j for j in profile.jobs if j.fail_rate > 0]
    retries: dict[str, float] = {}
    for _ in range(profile.retries):
        template = rng.choices(retryable, weights=[j.weight * j.fail_rate for j in retryable])[0]
        max_retries = _max_retries({**{"retry": True}, **template.options})
        count = min(max_retries - 1, int(rng.expovariate(0.12)))
        wait = retry_delay(rng, count)
        last_failure = now - rng.uniform(0, wait)  # the next attempt is still ahead
        first_failure = last_failure - sum(retry_delay(rng, i) for i in range(count)) - rng.uniform(0, 5)
        created = first_failure - rng.uniform(0.01, template.duration * 3)
        job = new_job(profile, template, rng, created, created + rng.uniform(0.001, 0.05))
        _failed(profile, rng, job, template, first_failure, last_failure, count)
        if count:
            job["enqueued_at"] = job_stamp(profile, last_failure - rng.uniform(0.01, 2))
        retries[dump_json(job)] = last_failure + wait
    if retries:
        pipe.zadd(k("retry"), retries)

    # -- scheduled: perform_in from a minute to a month out ------------------------------------------------------
    schedulable = [j for j in profile.jobs if j.schedule_rate > 0] or list(profile.jobs)
    scheduled: dict[str, float] = {}
    for _ in range(profile.scheduled):
        template = rng.choices(schedulable, weights=[j.weight for j in schedulable])[0]
        created = now - rng.uniform(0, 86400 * 2)
        at = round(now + rng.choice([60, 300, 900, 3600, 6 * 3600, 86400, 3 * 86400, 14 * 86400]) * rng.uniform(0.1, 1.0), 6)
        scheduled[dump_json(new_job(profile, template, rng, created, None, at))] = at
    if scheduled:
        pipe.zadd(k("schedule"), scheduled)

    # -- dead: retries exhausted over the last six months --------------------------------------------------------
    dead: dict[str, float] = {}
    for _ in range(profile.dead):
        template = rng.choices(retryable, weights=[j.weight * j.fail_rate for j in retryable])[0]
        max_retries = _max_retries({**{"retry": True}, **template.options})
        died = now - min(DEAD_TIMEOUT - 3600, rng.expovariate(1 / (86400 * 20)))
        first_failure = died - sum(retry_delay(rng, i) for i in range(max_retries))
        created = first_failure - rng.uniform(0.05, 5)
        job = new_job(profile, template, rng, created, created + 0.01)
        _failed(profile, rng, job, template, first_failure, died, max_retries)
        dead[dump_json(job)] = round(died, 6)
    if dead:
        pipe.zadd(k("dead"), dead)

    # -- processes with running jobs -----------------------------------------------------------------------------
    for dyno in profile.dynos:
        identity, pid = _new_identity(rng, dyno)
        started = now - rng.uniform(3600, 86400 * 2)
        info = process_info(profile, dyno, identity, pid, round(started, 6))
        busy = 0 if dyno.embedded and rng.random() < 0.5 else rng.randint(max(1, dyno.concurrency // 3), dyno.concurrency)
        if dyno.quiet:
            busy = min(busy, 2)
        queues = [q for q, _ in dyno.queues]
        work = {}
        for _ in range(busy):
            queue = rng.choice(queues)
            template = _pick(rng, profile, queue) if any(j.queue == queue for j in profile.jobs) else _pick(rng, profile)
            run_at = now - min(template.duration * rng.expovariate(1.0), 3000)
            job = new_job(profile, template, rng, run_at - rng.uniform(0.1, 30), run_at - rng.uniform(0.01, 5))
            work[_tid(rng)] = _work_entry(template.queue, dump_json(job), run_at)
        _heartbeat(pipe, profile, identity, dump_json(info), work, dyno.quiet, rng.randint(180_000, 650_000),
                   rng.randint(300, 2500), dyno.concurrency, round(now - rng.uniform(0, 4), 6))
    pipe.execute()


# ----------------------------------------------------------------------------------------------------------------
# Simulator

# Sidekiq's Scheduled::Enq Lua (6.3+): pop one due job from a sorted set. The tests race kiqboard against it too.
SIDEKIQ_POLLER_LUA = """
local key, now = KEYS[1], ARGV[1]
local jobs = redis.call("zrangebyscore", key, "-inf", now, "limit", 0, 1)
if jobs[1] then
  redis.call("zrem", key, jobs[1])
  return jobs[1]
end
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, int(rng.gauss(mean, math.sqrt(mean)) + 0.5))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class _DynoState:
    spec: DynoSpec
    identity: str | None = None
    info_json: str | None = None
    quiet: bool = False
    rss: int = 300_000
    down_until: float = 0.0  # stopped: restart (a new identity) after this time
    quiet_since: float | None = None


@dataclass
class _PoolState:
    profile: DemoProfile
    client: Any
    dynos: list[_DynoState]
    enq: Any = None
    discovered: bool = False
    errors: int = 0
    fail_boost: float = 1.0  # > 1 while the retry set is well below its seeded size (a flaky upstream)


class DemoSimulator:
    """One daemon thread that keeps every demo pool moving, about once a second.

    Each tick, per pool: traffic arrives (LPUSH, some perform_in into `schedule`), the poller moves due
    `schedule`/`retry` entries to their queues, every process finishes some running jobs (counting processed,
    failing some into `retry` or `dead`) and fetches new ones, honours quiet/stop signals from the UI, and
    heartbeats (work hash, identity hash, EXPIRE 60). Sizes stay bounded. A failing tick is logged, never fatal.
    """

    def __init__(self, pools: Iterable[Any] | Mapping[str, Any], interval: float = 1.0, seed: int | str | None = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.rng = random.Random(seed)
        self.clock = clock
        self.pools: list[_PoolState] = []
        items = pools.items() if isinstance(pools, Mapping) else pools
        for item in items:
            if isinstance(item, tuple):
                which, client = item
                if isinstance(which, DemoProfile | PoolSettings | str):
                    profile = profile_for(which)
                else:  # (client, settings)
                    client, profile = which, profile_for(client)  # right-hand side first: client is the settings here
            else:
                client = item
                try:
                    profile = _PROFILES_BY_CLIENT[client]
                except (KeyError, TypeError):
                    raise ValueError("DemoSimulator: pass (pool_settings, client) pairs or clients made by demo_client()/seed()") from None
            self.pools.append(_PoolState(profile, client, [_DynoState(spec) for spec in profile.dynos]))
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.ticks = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> "DemoSimulator":
        """Start the thread unless it runs already in this process (safe to call on every request)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return self
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return self
            self._stop = threading.Event()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="kiqboard-demo-simulator", daemon=True)
            self._thread.start()
        return self

    ensure_started = start

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - never let the demo thread die
                log.exception("demo simulator tick failed")
            stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    # -- one step -----------------------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Advance every pool by one step; an error in one pool is logged and the others still move."""
        with self._tick_lock:
            now = self.clock() if now is None else float(now)
            for state in self.pools:
                try:
                    self._tick_pool(state, now)
                    state.errors = 0
                except Exception:  # noqa: BLE001
                    state.errors += 1
                    if state.errors == 1 or state.errors % 60 == 0:
                        log.exception("demo pool %s: tick failed (%d in a row)", state.profile.name, state.errors)
            self.ticks += 1

    def _tick_pool(self, state: _PoolState, now: float) -> None:
        profile, client, rng, k = state.profile, state.client, self.rng, state.profile.key
        if state.enq is None:
            state.enq = client.register_script(SIDEKIQ_POLLER_LUA)
        if not state.discovered:
            self._discover(state)
            state.discovered = True

        queues = list(profile.queues)
        lengths = dict(zip(queues, self._pipe(client, [("llen", k(f"queue:{q}")) for q in queues])))
        paused = {_text(q) for q in client.smembers(k("paused"))}
        retry_size, schedule_size = self._pipe(client, [("zcard", k("retry")), ("zcard", k("schedule"))])
        state.fail_boost = 4.0 if retry_size < profile.retries * 0.8 else 1.0

        arrived: dict[str, int] = {}
        pipe = client.pipeline(transaction=False)
        # 1. traffic: Client#push of new jobs (LPUSH at the head) and perform_in (ZADD schedule)
        rhythm = 0.75 + 0.25 * math.sin(now / 600.0)  # slow waves so the live graph has shape
        for template in profile.jobs:
            share = template.weight / sum(j.weight for j in profile.jobs)
            for _ in range(_poisson(rng, profile.rate * share * rhythm * self.interval)):
                if template.schedule_rate and rng.random() < template.schedule_rate:
                    if schedule_size < profile.schedule_cap:
                        at = round(now + rng.uniform(5, 900), 6)
                        job = new_job(profile, template, rng, now, None, at)
                        pipe.zadd(k("schedule"), {dump_json(job): at})
                        schedule_size += 1
                    continue
                cap = profile.queues[template.queue][1] * 2 + 20 if template.queue in paused else profile.queue_cap
                if lengths.get(template.queue, 0) >= cap:
                    continue
                job = new_job(profile, template, rng, now, now)
                pipe.sadd(k("queues"), template.queue)
                pipe.lpush(k(f"queue:{template.queue}"), dump_json(job))
                lengths[template.queue] = lengths.get(template.queue, 0) + 1
                arrived[template.queue] = arrived.get(template.queue, 0) + 1
        pipe.execute()

        # 2. the poller: due retries and scheduled jobs go to their queues with a fresh enqueued_at
        pushes = client.pipeline(transaction=False)
        for set_name in ("retry", "schedule"):
            for _ in range(100):
                member = state.enq(keys=[k(set_name)], args=[repr(now)])
                if member is None:
                    break
                try:
                    item = json.loads(_text(member))
                except ValueError:
                    continue
                if not isinstance(item, dict):
                    continue
                item["enqueued_at"] = job_stamp(profile, now)
                queue = str(item.get("queue") or "default")
                pushes.sadd(k("queues"), queue)
                pushes.lpush(k(f"queue:{queue}"), dump_json(item))
                lengths[queue] = lengths.get(queue, 0) + 1
                arrived[queue] = arrived.get(queue, 0) + 1
        pushes.execute()

        # 3. processes: signals, finish + fetch, heartbeat. Fetching is throttled per queue to what arrived plus a
        #    share of the difference to the seeded backlog, so each queue hovers around its seeded size and latency.
        allowance: dict[str, int] = {}
        for queue, length in lengths.items():
            if queue in paused:
                continue
            target = profile.queues.get(queue, (0.0, 0))[1]
            correction = (length - arrived.get(queue, 0) - target) * 0.15
            allowance[queue] = max(0, min(length, arrived.get(queue, 0) + math.floor(correction + rng.random())))
        processed = failed = 0
        pipe = client.pipeline(transaction=False)
        for dyno in state.dynos:
            p, f = self._tick_dyno(state, dyno, now, lengths, allowance, paused, pipe)
            processed += p
            failed += f
        # Launcher#❤ flushes the counters: totals and today's daily keys (EXPIRE 5 years)
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d")
        for name, value in (("processed", processed), ("failed", failed)):
            pipe.incrby(k(f"stat:{name}"), value)
            pipe.incrby(k(f"stat:{name}:{today}"), value)
            pipe.expire(k(f"stat:{name}:{today}"), STATS_TTL)
        pipe.execute()

        # 4. bounds: kill the longest-waiting retries into the morgue, trim the morgue like DeadSet#kill
        retry_size = client.zcard(k("retry"))
        excess = max(0, retry_size - profile.retry_cap)
        kills = excess + (1 if rng.random() < 0.03 and retry_size > profile.retries // 2 else 0)
        if kills:
            for member, _score in client.zpopmax(k("retry"), kills):
                client.zadd(k("dead"), {member: round(now, 6)})
        pipe = client.pipeline(transaction=False)
        pipe.zremrangebyscore(k("dead"), "-inf", f"({now - DEAD_TIMEOUT}")
        pipe.zremrangebyrank(k("dead"), 0, -(profile.dead_cap + 1))
        for queue in queues:
            pipe.ltrim(k(f"queue:{queue}"), 0, profile.queue_cap - 1)
        if schedule_size > profile.schedule_cap:
            pipe.zremrangebyrank(k("schedule"), profile.schedule_cap, -1)
        pipe.execute()

    @staticmethod
    def _pipe(client, commands: Sequence[tuple]) -> list:
        pipe = client.pipeline(transaction=False)
        for name, *args in commands:
            getattr(pipe, name)(*args)
        return pipe.execute()

    def _discover(self, state: _PoolState) -> None:
        """Adopt the seeded processes (by dyno hostname); identities whose hash expired are cleaned up."""
        client, k = state.client, state.profile.key
        by_host: dict[str, list[str]] = {}
        for raw in client.smembers(k("processes")):
            identity = _text(raw)
            by_host.setdefault(identity.split(":", 1)[0], []).append(identity)
        for dyno in state.dynos:
            for identity in sorted(by_host.pop(dyno.spec.hostname, [])):
                info_json, quiet, rss = client.hmget(k(identity), "info", "quiet", "rss")
                if info_json is None or dyno.identity is not None:
                    self._forget(state, identity)
                    continue
                dyno.identity, dyno.info_json = identity, _text(info_json)
                dyno.quiet = _text(quiet or b"false") == "true"
                dyno.rss = int(_text(rss or b"300000"))
        for identities in by_host.values():  # not one of ours
            for identity in identities:
                if not client.exists(k(identity)):
                    self._forget(state, identity)

    def _forget(self, state: _PoolState, identity: str) -> None:
        k = state.profile.key
        pipe = state.client.pipeline(transaction=False)
        pipe.srem(k("processes"), identity)
        pipe.unlink(k(identity), k(identity + state.profile.work_suffix))
        pipe.execute()

    def _boot(self, state: _PoolState, dyno: _DynoState, now: float) -> None:
        identity, pid = _new_identity(self.rng, dyno.spec)
        dyno.identity = identity
        dyno.info_json = dump_json(process_info(state.profile, dyno.spec, identity, pid, round(now, 6)))
        dyno.quiet = False
        dyno.quiet_since = None
        dyno.rss = self.rng.randint(160_000, 240_000)

    def _tick_dyno(self, state: _PoolState, dyno: _DynoState, now: float, lengths: dict[str, int],
                   allowance: dict[str, int], paused: set[str], pipe) -> tuple[int, int]:
        profile, client, rng, k = state.profile, state.client, self.rng, state.profile.key
        booted = False
        if dyno.identity is None:
            if now < dyno.down_until:
                return 0, 0
            self._boot(state, dyno, now)
            booted = True
        identity = dyno.identity
        assert identity is not None
        work_key = k(identity + profile.work_suffix)
        raw_work, exists, member, signal = self._pipe(client, [
            ("hgetall", work_key), ("exists", k(identity)), ("sismember", k("processes"), identity),
            # signals pushed by the UI (quiet = TSTP, stop = TERM), one per heartbeat like Launcher#❤
            ("rpop", k(f"{identity}-signals")),
        ])
        work = {_text(t): _text(v) for t, v in raw_work.items()}
        if not booted and not exists and not member:
            # someone removed it (stop + cleanup): come back as a new process
            self._stopped(state, dyno, work, now)
            return 0, 0

        if signal is not None:
            signal = _text(signal)
            if signal == "TSTP":
                dyno.quiet, dyno.quiet_since = True, now
            elif signal == "TERM":
                self._stopped(state, dyno, work, now)
                return 0, 0
        if not dyno.quiet and not dyno.spec.embedded and rng.random() < 1 / 1800:  # a deploy starts somewhere
            dyno.quiet, dyno.quiet_since = True, now

        processed = failed = 0
        # finish running jobs
        for tid, entry in list(work.items()):
            try:
                record = json.loads(entry)
                payload = record["payload"]
                item = json.loads(payload) if isinstance(payload, str) else dict(payload)
            except (ValueError, KeyError, TypeError):
                del work[tid]
                continue
            template = template_of(profile, item)
            duration = template.duration if template else 2.0
            if rng.random() >= min(0.95, self.interval / duration):
                continue
            del work[tid]
            processed += 1
            fail_rate = (template.fail_rate if template else 0.01) * state.fail_boost
            if "retry_count" in item:
                fail_rate = min(0.6, fail_rate * 8)  # retried jobs fail again more often
            if rng.random() < fail_rate:
                failed += 1
                self._fail(state, item, template, now, pipe)

        # quiet processes finish what they have, then stop within Sidekiq's 25 s timeout and restart (a deploy)
        if dyno.quiet and dyno.quiet_since is None:
            dyno.quiet_since = now
        if dyno.quiet and now - (dyno.quiet_since or now) > (25 if work else 10):
            self._stopped(state, dyno, work, now)
            return processed, failed

        # fetch: BRPOP from the tail of the process's queues (strict order or weighted random)
        free = dyno.spec.concurrency - len(work)
        if not dyno.quiet and free > 0:
            order = self._queue_order(dyno.spec)
            budget = free
            for queue in order:
                if budget <= 0:
                    break
                if queue in paused or lengths.get(queue, 0) <= 0:
                    continue
                take = min(budget, lengths[queue], allowance.get(queue, 0))
                if take <= 0:
                    continue
                popped = client.rpop(k(f"queue:{queue}"), take) or []  # BRPOP, `take` times
                for raw in popped:
                    work[_tid(rng)] = _work_entry(queue, _text(raw), now)
                lengths[queue] -= len(popped)
                allowance[queue] -= len(popped)
                budget -= len(popped)
        dyno.rss = max(120_000, min(900_000, dyno.rss + rng.randint(-800, 1500)))
        _heartbeat(pipe, profile, identity, dyno.info_json or "{}", work, dyno.quiet, dyno.rss,
                   rng.randint(250, 2500), dyno.spec.concurrency, now)
        return processed, failed

    def _queue_order(self, spec: DynoSpec) -> list[str]:
        weights = [w for _, w in spec.queues]
        names = [q for q, _ in spec.queues]
        if all(w == 0 for w in weights):
            return names
        # weighted random without replacement, like BasicFetch's shuffled weighted list + uniq
        pool = [q for q, w in spec.queues for _ in range(max(1, w))]
        self.rng.shuffle(pool)
        return list(dict.fromkeys(pool))

    def _fail(self, state: _PoolState, item: dict, template: JobTemplate | None, now: float, pipe) -> None:
        profile, k = state.profile, state.profile.key
        if item.get("retry") is False:
            return  # discarded, like Sidekiq with retry: false
        fail_job(profile, self.rng, item, template, now)
        count = int(item["retry_count"])
        if count < _max_retries(item):
            pipe.zadd(k("retry"), {dump_json(item): now + retry_delay(self.rng, count)})
        else:  # retries exhausted: DeadSet#kill
            pipe.zadd(k("dead"), {dump_json(item): round(now, 6)})

    def _stopped(self, state: _PoolState, dyno: _DynoState, work: Mapping[str, str], now: float) -> None:
        """Launcher#stop: unfinished jobs go back to their queues (bulk_requeue RPUSH), the heartbeat is cleared."""
        profile, client, k = state.profile, state.client, state.profile.key
        pipe = client.pipeline(transaction=False)
        for entry in work.values():
            try:
                record = json.loads(entry)
                pipe.rpush(k(f"queue:{record['queue']}"), record["payload"])
            except (ValueError, KeyError, TypeError):
                continue
        if dyno.identity:
            pipe.srem(k("processes"), dyno.identity)
            pipe.unlink(k(dyno.identity + profile.work_suffix), k(dyno.identity), k(f"{dyno.identity}-signals"))
        pipe.execute()
        dyno.identity = dyno.info_json = None
        dyno.quiet = False
        dyno.down_until = now + self.rng.uniform(3, 12)
