"""A read-only, version-tolerant model of a Sidekiq keyspace (Sidekiq 5.x through 8.x).

Vocabulary follows Sidekiq's ``lib/sidekiq/api.rb``: Stats, History, Job (JobRecord), SortedEntry, Process, Work.
Every page method returns everything that page shows, including the nav ``stats``, in at most two Redis round
trips: one ``EVALSHA`` of a read-only Lua script (plus ``INFO`` pipelined alongside for the dashboard), and a second
one only when the server's script cache does not know the script yet (then ``EVAL`` with the body).

Nothing here writes to Redis. Sidekiq's own UI prunes ``processes`` on view; we report such processes with
``alive=False`` instead.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import redis

SetName = Literal["retry", "schedule", "dead"]
SET_NAMES: tuple[SetName, ...] = ("retry", "schedule", "dead")

MAX_COUNT = 1000
MAX_DAYS = 180
# Filtered views (substr) scan at most this many members per sorted set inside one Lua call...
SEARCH_SCAN_LIMIT = 100_000
# ...asking ZSCAN for this many per step.
SEARCH_SCAN_STEP = 1000

ACTIVE_JOB_WRAPPERS = frozenset({
    "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
    "Sidekiq::ActiveJob::Wrapper",
})
DELIVERY_JOB = "ActionMailer::DeliveryJob"
MAIL_DELIVERY_JOB = "ActionMailer::MailDeliveryJob"
ENCRYPTED_PLACEHOLDER = "[encrypted data]"

# Sidekiq's web/helpers.rb RETRY_JOB_KEYS: everything else is an "extra".
KNOWN_JOB_KEYS = frozenset({
    "queue", "class", "args", "retry_count", "retried_at", "failed_at", "jid", "error_message", "error_class",
    "backtrace", "error_backtrace", "enqueued_at", "retry", "wrapped", "created_at", "tags", "display_class",
})

# Sidekiq's FAKE_INFO, returned when INFO is renamed or disabled.
FAKE_REDIS_INFO = {
    "redis_version": "9.9.9",
    "uptime_in_days": "9999",
    "connected_clients": "9999",
    "used_memory_human": "9P",
    "used_memory_peak_human": "9P",
}

# An integer timestamp below this is seconds (old non-Ruby clients), not Sidekiq 8 milliseconds (~ March 1973 in ms).
_MS_THRESHOLD = 100_000_000_000
_MAX_BACKTRACE_BYTES = 4 * 1024 * 1024
_SCORE_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?inf")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------
# Keys of sorted-set entries


def entry_key(score: float, jid: str) -> str:
    """The ``SCORE-JID`` key of a sorted-set entry, the score as ``repr(float)`` (round-trips exactly)."""
    return f"{float(score)!r}-{jid}"


def parse_key(key: str) -> tuple[float, str] | None:
    """``"SCORE-JID"`` -> ``(score, jid)``; ``None`` if malformed.

    Splits at the first dash that leaves a valid score on its left, so ``"1e-05-abc"`` and ``"-3.5-abc"`` work and
    a jid may itself contain dashes.
    """
    if not isinstance(key, str):
        return None
    start = 0
    while True:
        dash = key.find("-", start)
        if dash < 0:
            return None
        score_text, jid = key[:dash], key[dash + 1:]
        if score_text and jid and _SCORE_RE.fullmatch(score_text):
            score = float(score_text)
            if not math.isnan(score):
                return score, jid
        start = dash + 1


# --------------------------------------------------------------------------------------------------------------
# Domain objects


@dataclass(frozen=True)
class Stats:
    processed: int
    failed: int
    scheduled: int
    retries: int
    dead: int
    processes: int
    busy: int
    enqueued: int
    default_latency: float

    def as_sidekiq_json(self) -> dict:
        """The ``"sidekiq"`` object of Sidekiq Web's ``GET /stats``."""
        return {
            "processed": self.processed,
            "failed": self.failed,
            "busy": self.busy,
            "processes": self.processes,
            "enqueued": self.enqueued,
            "scheduled": self.scheduled,
            "retries": self.retries,
            "dead": self.dead,
            "default_latency": self.default_latency,
        }


@dataclass(frozen=True)
class History:
    dates: list[dt.date]  # newest first
    processed: list[int]
    failed: list[int]


@dataclass(frozen=True)
class RedisInfo:
    redis_version: str
    uptime_in_days: str
    connected_clients: str
    used_memory_human: str
    used_memory_peak_human: str

    def as_sidekiq_json(self) -> dict:
        return {
            "redis_version": self.redis_version,
            "uptime_in_days": self.uptime_in_days,
            "connected_clients": self.connected_clients,
            "used_memory_human": self.used_memory_human,
            "used_memory_peak_human": self.used_memory_peak_human,
        }


@dataclass(frozen=True)
class Job:
    """One job payload from any queue, sorted set or running-work entry. Building one never raises."""

    raw: str
    raw_bytes: bytes
    valid: bool
    item: dict
    klass: str
    display_class: str
    display_args: list
    jid: str | None
    queue: str | None
    tags: list[str]
    bid: str | None
    created_at: dt.datetime | None
    enqueued_at: dt.datetime | None
    failed_at: dt.datetime | None
    retried_at: dt.datetime | None
    retry_count: int | None
    error_class: str | None
    error_message: str | None
    backtrace: list[str] | None
    extras: dict
    timestamps_in_ms: bool

    @property
    def error(self) -> str | None:
        if self.error_class is None and self.error_message is None:
            return None
        return f"{self.error_class or ''}: {self.error_message or ''}"

    @property
    def args(self) -> list:
        """The raw ``args`` (as a list), before display unwrapping."""
        if not self.valid:
            return [self.raw]
        args = self.item.get("args")
        if isinstance(args, list):
            return args
        return [] if args is None else [args]

    @classmethod
    def parse(cls, member: bytes | str | dict, queue: str | None = None) -> "Job":
        return parse_job(member, queue)


@dataclass(frozen=True)
class SortedEntry:
    set_name: SetName
    score: float
    job: Job

    @property
    def key(self) -> str:
        return entry_key(self.score, self.job.jid or "")

    @property
    def at(self) -> dt.datetime:
        return _datetime_from_seconds(self.score) or dt.datetime.fromtimestamp(0, dt.timezone.utc)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    count: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.count)) if self.count > 0 else 1


@dataclass(frozen=True)
class QueueSummary:
    name: str
    size: int
    latency: float  # seconds
    paused: bool


@dataclass(frozen=True)
class QueuedJob:
    index: int  # 0 = newest (list head); the next job to run has index size-1
    job: Job


@dataclass(frozen=True)
class Process:
    identity: str
    hostname: str
    pid: int | None
    tag: str | None
    labels: list[str]
    queues: list[str]
    weights: Any
    capsules: dict
    concurrency: int
    busy: int
    beat: dt.datetime | None
    quiet: bool
    stopping: bool
    rss_kb: int | None
    rtt_us: int | None
    version: str | None
    started_at: dt.datetime | None
    embedded: bool
    alive: bool  # False when its hash expired: the process is gone but still listed in `processes`
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Work:
    identity: str
    tid: str
    queue: str
    run_at: dt.datetime | None
    job: Job


@dataclass(frozen=True)
class DashboardData:
    stats: Stats
    history: History
    redis: RedisInfo


@dataclass(frozen=True)
class BusyData:
    stats: Stats
    processes: list[Process]
    work: Page[Work]
    leader: str | None


@dataclass(frozen=True)
class QueuesData:
    stats: Stats
    queues: list[QueueSummary]


@dataclass(frozen=True)
class QueueData:
    stats: Stats
    name: str
    paused: bool
    jobs: Page[QueuedJob]


@dataclass(frozen=True)
class SetData:
    stats: Stats
    name: SetName
    substr: str | None
    entries: Page[SortedEntry]
    # True when a filtered view hit SEARCH_SCAN_LIMIT before scanning the whole set.
    truncated: bool = False


@dataclass(frozen=True)
class EntryData:
    stats: Stats
    entry: SortedEntry | None


# --------------------------------------------------------------------------------------------------------------
# Job parsing (pure functions, no Redis)


def _reject_constant(name: str) -> Any:
    # Ruby's JSON (Sidekiq.load_json) refuses NaN/Infinity; so do we.
    raise ValueError(f"invalid JSON constant {name}")


def _load_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None


def _text(value: Any) -> str:
    """A display string for any JSON value (strings as-is, everything else as compact JSON)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _datetime_from_seconds(seconds: float) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def job_time(value: Any) -> dt.datetime | None:
    """A job timestamp: float epoch seconds (Sidekiq <= 7) or integer epoch milliseconds (Sidekiq 8)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return _datetime_from_seconds(value / 1000 if abs(value) >= _MS_THRESHOLD else float(value))
    if not math.isfinite(value):
        return None
    return _datetime_from_seconds(value)


def job_time_seconds(value: Any) -> float | None:
    """A job timestamp as float epoch seconds (see ``job_time``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value / 1000 if abs(value) >= _MS_THRESHOLD else float(value)
    return value if math.isfinite(value) else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, (str, bytes)):
        return _ruby_to_i(value, default=None)
    return None


def _ruby_to_i(value: Any, default: int | None = 0) -> int | None:
    """Ruby's ``String#to_i``: leading integer, else ``default`` (Ruby gives 0)."""
    if value is None or value is False:
        return default
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    match = re.match(r"\s*([-+]?\d+)", str(value).replace("_", ""))
    return int(match.group(1)) if match else default


def _ruby_to_f(value: Any) -> float | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    match = re.match(r"\s*[-+]?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", str(value))
    if not match:
        return None
    number = float(match.group(0))
    return number if math.isfinite(number) else None


def decode_backtrace(value: Any) -> list[str] | None:
    """``error_backtrace``: a raw array (5.x), or base64(zlib(JSON array)) wrapped (6.x) or strict (8.x).

    Undecodable values (garbage, Marshal data from early 6.0) come back as a one-element list of the raw text.
    """
    if value is None:
        return None
    if isinstance(value, list):
        return [_text(line) for line in value]
    if not isinstance(value, str):
        return [_text(value)]
    try:
        # validate=False skips newlines like Ruby's Base64.decode64 ("m" unpack) does.
        compressed = base64.b64decode(value.encode("ascii", "ignore"), validate=False)
        inflater = zlib.decompressobj()
        inflated = inflater.decompress(compressed, _MAX_BACKTRACE_BYTES)
        if inflater.unconsumed_tail:
            return [value]
        ok, lines = _load_json(inflated.decode("utf-8", "replace"))
    except (binascii.Error, zlib.error, ValueError):
        return [value]
    if ok and isinstance(lines, list):
        return [_text(line) for line in lines]
    return [value]


def _deserialize_active_job_argument(argument: Any) -> Any:
    # Sidekiq >= 7.1 JobRecord#deserialize_argument.
    if isinstance(argument, list):
        return [_deserialize_active_job_argument(arg) for arg in argument]
    if isinstance(argument, dict):
        if len(argument) == 1 and "_aj_globalid" in argument:
            return argument["_aj_globalid"]
        return {
            key: _deserialize_active_job_argument(value)
            for key, value in argument.items()
            if not (isinstance(key, str) and key.startswith("_aj_"))
        }
    return argument


def _ruby_join(values: Sequence[Any], separator: str) -> str:
    parts = []
    for value in values:
        if isinstance(value, list):
            parts.append(_ruby_join(value, separator))
        else:
            parts.append(_text(value))
    return separator.join(parts)


def _display_class(item: dict, klass: str, args: list) -> str:
    override = item.get("display_class")
    if override is not None and override is not False:
        return _text(override)
    if klass in ACTIVE_JOB_WRAPPERS:
        job_class = item.get("wrapped") or (args[0] if args else None)
        if job_class in (DELIVERY_JOB, MAIL_DELIVERY_JOB):
            first = args[0] if args else None
            arguments = first.get("arguments") if isinstance(first, dict) else None
            if isinstance(arguments, list):
                return _ruby_join(arguments[:2], "#")
        return _text(job_class) if job_class is not None else klass
    return klass


def _display_args(item: dict, klass: str, args: list) -> list:
    if klass in ACTIVE_JOB_WRAPPERS:
        wrapped = item.get("wrapped")
        first = args[0] if args else None
        if wrapped:
            arguments = first.get("arguments") if isinstance(first, dict) else None
            if not isinstance(arguments, list):
                return list(args)
            job_args = _deserialize_active_job_argument(arguments)
        else:
            job_args = []
        job_class = wrapped or first
        if job_class == DELIVERY_JOB:
            return job_args[3:]
        if job_class == MAIL_DELIVERY_JOB:
            # Sidekiq 8: [params, args] of the mailer call (6.x showed only args).
            rest = job_args[3:]
            if rest and isinstance(rest[0], dict):
                return [rest[0].get("params"), rest[0].get("args")]
            return rest
        return job_args
    if item.get("encrypt") and args:
        return [*args[:-1], ENCRYPTED_PLACEHOLDER]
    return list(args)


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [_text(tag) for tag in value]
    return [_text(value)]


def _as_bytes(member: bytes | str) -> bytes:
    if isinstance(member, bytes):
        return member
    return member.encode("utf-8", "surrogateescape")


def parse_job(member: bytes | str | dict, queue: str | None = None) -> Job:
    """Build a Job from a stored member (bytes or str) or an already-parsed payload (5.x work entries)."""
    if isinstance(member, dict):
        raw = json.dumps(member, ensure_ascii=False, separators=(",", ":"), default=str)
        raw_bytes = raw.encode("utf-8", "surrogateescape")
        ok, item = True, member
    else:
        raw_bytes = _as_bytes(member)
        raw = raw_bytes.decode("utf-8", "replace")
        # Non-UTF-8 bytes become U+FFFD but the rest of the payload (jid, class...) still parses.
        ok, item = _load_json(raw)
    if not ok or not isinstance(item, dict):
        return Job(
            raw=raw, raw_bytes=raw_bytes, valid=False, item={}, klass="", display_class="", display_args=[raw],
            jid=None, queue=queue, tags=[], bid=None, created_at=None, enqueued_at=None, failed_at=None,
            retried_at=None, retry_count=None, error_class=None, error_message=None, backtrace=None, extras={},
            timestamps_in_ms=False,
        )

    klass = _text(item.get("class")) if item.get("class") is not None else ""
    raw_args = item.get("args")
    args = raw_args if isinstance(raw_args, list) else ([] if raw_args is None else [raw_args])
    try:
        display_class = _display_class(item, klass, args)
    except Exception:  # noqa: BLE001 - a hostile payload must never break a page
        display_class = klass
    try:
        display_args = _display_args(item, klass, args)
    except Exception:  # noqa: BLE001
        display_args = list(args)

    stamp = item.get("created_at", item.get("enqueued_at"))
    return Job(
        raw=raw,
        raw_bytes=raw_bytes,
        valid=True,
        item=item,
        klass=klass,
        display_class=display_class,
        display_args=display_args,
        jid=_optional_text(item.get("jid")),
        queue=queue if queue is not None else _optional_text(item.get("queue")),
        tags=_tags(item.get("tags")),
        bid=_optional_text(item.get("bid")),
        created_at=job_time(item.get("created_at")),
        enqueued_at=job_time(item.get("enqueued_at")),
        failed_at=job_time(item.get("failed_at")),
        retried_at=job_time(item.get("retried_at")),
        retry_count=_int_or_none(item.get("retry_count")),
        error_class=_optional_text(item.get("error_class")),
        error_message=_optional_text(item.get("error_message")),
        backtrace=decode_backtrace(item.get("error_backtrace")),
        extras={key: value for key, value in item.items() if key not in KNOWN_JOB_KEYS},
        timestamps_in_ms=isinstance(stamp, int) and not isinstance(stamp, bool),
    )


def job_latency(member: bytes | str | None, now: float) -> float:
    """Seconds since the job was enqueued (``enqueued_at`` falling back to ``created_at``, as Sidekiq 8); 0 if none."""
    if member is None:
        return 0.0
    ok, item = _load_json(_as_bytes(member).decode("utf-8", "replace"))
    if not ok or not isinstance(item, dict):
        return 0.0
    for field_name in ("enqueued_at", "created_at"):
        value = item.get(field_name)
        if value is not None and value is not False:
            seconds = job_time_seconds(value)
            return now - seconds if seconds is not None else 0.0
    return 0.0
