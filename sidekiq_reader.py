"""A read-only, version-tolerant model of a Sidekiq keyspace (Sidekiq 5.x through 8.x).

Vocabulary follows Sidekiq's ``lib/sidekiq/api.rb``: Stats, History, Job (JobRecord), SortedEntry, Process, Work.
Every page method returns everything that page shows, including the nav ``stats``, in at most two Redis round
trips: one ``EVALSHA`` of a read-only Lua script (plus ``INFO`` pipelined alongside for the dashboard), and a second
one only when the server's script cache does not know the script yet (then ``EVAL`` with the body).
Filtered views (``substr``) and ``search_jid`` are the exception: a bounded ZSCAN in short Lua chunks (see SEARCH_*),
one round trip for sets up to ~10k members, at most 10 per set beyond that.

Job display rules follow Sidekiq 8 (a superset of 6.4.1): ``_aj_globalid`` -> gid string and ``_aj_*`` keys dropped
(7.1+), MailDeliveryJob args shown as ``[params, args]``, latency from ``enqueued_at`` falling back to
``created_at``. Integer timestamps are milliseconds (Sidekiq 8) unless too small to be (then seconds).
Running jobs on the busy page are sorted by ``run_at`` (oldest first), then identity and tid, like Sidekiq.

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
# Filtered views (substr) and search_jid scan at most SEARCH_SCAN_LIMIT members per sorted set and keep at most
# SEARCH_MATCH_LIMIT matches, in Lua chunks of SEARCH_STEPS_PER_CALL ZSCAN steps of COUNT SEARCH_SCAN_STEP (~10k
# members, a few ms of Redis time each): a set of <= ~10k members costs one round trip, 1M members 10.
SEARCH_SCAN_LIMIT = 100_000
SEARCH_MATCH_LIMIT = 10_000
SEARCH_SCAN_STEP = 1000
SEARCH_STEPS_PER_CALL = 10

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
    # True when a filtered view stopped at SEARCH_SCAN_LIMIT / SEARCH_MATCH_LIMIT before scanning the whole set.
    truncated: bool = False


@dataclass(frozen=True)
class EntryData:
    stats: Stats
    entry: SortedEntry | None


@dataclass(frozen=True)
class OverviewData:
    """One pool as the cross-pool overview and /metrics show it."""

    stats: Stats
    history: History
    queues: list[QueueSummary]  # sorted by name
    threads: int  # Σ concurrency of the live processes (Sidekiq's Busy "Threads")


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


# --------------------------------------------------------------------------------------------------------------
# The read-only Lua script: one call per page, so a page costs one round trip whatever the fan-out.
# Keys are built inside the script from ARGV[1] (the namespace prefix); every command goes through `safe`, so a key
# of the wrong type (WRONGTYPE) reads as empty instead of failing the page.

PAGE_SCRIPT = r"""
local prefix, op = ARGV[1], ARGV[2]

local function k(name) return prefix .. name end

local function safe(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return false end
  return reply
end

local function num(v) if type(v) == 'number' then return v end return 0 end

local function list(v) if type(v) == 'table' then return v end return {} end

local function to_i(v)  -- Ruby's String#to_i
  if type(v) ~= 'string' then return 0 end
  return tonumber(string.match(v, '^%s*([-+]?%d+)')) or 0
end

local function sorted_members(key)
  local found = list(safe('SMEMBERS', key))
  table.sort(found)
  return found
end

local function stats()
  local busy = 0
  for _, identity in ipairs(sorted_members(k('processes'))) do
    busy = busy + to_i(safe('HGET', k(identity), 'busy'))
  end
  local enqueued = 0
  for _, queue in ipairs(sorted_members(k('queues'))) do
    enqueued = enqueued + num(safe('LLEN', k('queue:' .. queue)))
  end
  return {
    safe('GET', k('stat:processed')), safe('GET', k('stat:failed')),
    num(safe('ZCARD', k('schedule'))), num(safe('ZCARD', k('retry'))), num(safe('ZCARD', k('dead'))),
    num(safe('SCARD', k('processes'))), busy, enqueued, safe('LINDEX', k('queue:default'), -1),
  }
end

local function run_at(json)
  -- Sidekiq writes run_at last; take the last occurrence so a nested (5.x object) payload can't shadow it.
  local value = string.match(json, '"run_at"%s*:%s*(%-?[%d%.eE%+%-]+)%s*}%s*$')
    or string.match(json, '^.*"run_at"%s*:%s*(%-?[%d%.eE%+%-]+)')  -- anchored: unanchored '.*' is O(n^2)
  return tonumber(value)
end

if op == 'stats' then
  return {stats()}

elseif op == 'dashboard' then
  local processed, failed = {}, {}
  for i = 3, #ARGV do
    processed[#processed + 1] = k('stat:processed:' .. ARGV[i])
    failed[#failed + 1] = k('stat:failed:' .. ARGV[i])
  end
  local p, f = {}, {}
  if #processed > 0 then
    p = list(safe('MGET', unpack(processed)))
    f = list(safe('MGET', unpack(failed)))
  end
  return {stats(), p, f}

elseif op == 'queues' or op == 'queue_sizes' then
  local rows = {}
  for _, name in ipairs(sorted_members(k('queues'))) do
    local size = num(safe('LLEN', k('queue:' .. name)))
    if op == 'queues' then
      rows[#rows + 1] = {name, size, safe('LINDEX', k('queue:' .. name), -1), num(safe('SISMEMBER', k('paused'), name))}
    else
      rows[#rows + 1] = {name, size}
    end
  end
  if op == 'queue_sizes' then return {false, rows} end
  return {stats(), rows}

elseif op == 'queue' then
  local key, start, stop = k('queue:' .. ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local size = num(safe('LLEN', key))
  local items
  if ARGV[6] == 'asc' then
    items = list(safe('LRANGE', key, -stop - 1, -start - 1))
  else
    items = list(safe('LRANGE', key, start, stop))
  end
  return {stats(), size, items, num(safe('SISMEMBER', k('paused'), ARGV[3]))}

elseif op == 'set' then
  local key, start, stop = k(ARGV[3]), ARGV[4], ARGV[5]
  local total = num(safe('ZCARD', key))
  local command = 'ZRANGE'
  if ARGV[6] == 'desc' then command = 'ZREVRANGE' end
  return {stats(), total, list(safe(command, key, start, stop, 'WITHSCORES'))}

elseif op == 'entry' or op == 'find' then
  local found = list(safe('ZRANGEBYSCORE', k(ARGV[3]), ARGV[4], ARGV[4], 'WITHSCORES'))
  if op == 'find' then return {false, found} end
  return {stats(), found}

elseif op == 'scan' or op == 'scan_stats' then
  -- One bounded chunk of ZSCAN MATCH (ARGV: set, cursor, pattern, steps, COUNT per step). Chunks keep each script
  -- short (~10k members) so a search never blocks the app's Redis for long; Python loops over the cursor.
  local key, cursor, pattern, steps, step = k(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
  local found = {}
  for _ = 1, steps do
    local reply = safe('ZSCAN', key, cursor, 'MATCH', pattern, 'COUNT', step)
    if not reply then cursor = '0'; break end
    cursor = reply[1]
    for _, value in ipairs(reply[2]) do found[#found + 1] = value end
    if cursor == '0' then break end
  end
  local nav = false
  if op == 'scan_stats' then nav = stats() end
  return {nav, cursor, found}

elseif op == 'overview' then
  -- The cross-pool overview and /metrics: stats, history for the dates in ARGV[3..], every queue's size, oldest job
  -- and paused flag, and the live processes' total concurrency (the reply stays small: ten pools parse it at once).
  local processed, failed = {}, {}
  for i = 3, #ARGV do
    processed[#processed + 1] = k('stat:processed:' .. ARGV[i])
    failed[#failed + 1] = k('stat:failed:' .. ARGV[i])
  end
  local p, f = {}, {}
  if #processed > 0 then
    p = list(safe('MGET', unpack(processed)))
    f = list(safe('MGET', unpack(failed)))
  end
  local rows = {}
  for _, name in ipairs(sorted_members(k('queues'))) do
    local key = k('queue:' .. name)
    rows[#rows + 1] = {name, num(safe('LLEN', key)), safe('LINDEX', key, -1), num(safe('SISMEMBER', k('paused'), name))}
  end
  local threads = 0
  for _, identity in ipairs(sorted_members(k('processes'))) do
    local fields = list(safe('HMGET', k(identity), 'info', 'concurrency'))
    if type(fields[1]) == 'string' then  -- alive: its hash has not expired
      local c
      if type(fields[2]) == 'string' and string.match(fields[2], '^%s*[-+]?%d') then
        c = to_i(fields[2])  -- a hash field since Sidekiq 8.1.2
      else
        local ok, info = pcall(cjson.decode, fields[1])
        if ok and type(info) == 'table' then c = tonumber(info.concurrency) end
      end
      if c then threads = threads + math.floor(c) end
    end
  end
  return {stats(), p, f, rows, threads}

elseif op == 'busy' then
  local start, count = tonumber(ARGV[3]), tonumber(ARGV[4])
  local processes, work = {}, {}
  for _, identity in ipairs(sorted_members(k('processes'))) do
    local key = k(identity)
    local exists = num(safe('EXISTS', key))
    local fields = list(safe('HMGET', key, 'info', 'busy', 'beat', 'quiet', 'rss', 'rtt_us', 'concurrency'))
    processes[#processes + 1] = {identity, exists, fields}
    if exists == 1 then
      -- IDENTITY:work since 6.4.2, IDENTITY:workers up to 6.4.1; a tid present in both counts once.
      local seen = {}
      for _, suffix in ipairs({':work', ':workers'}) do
        local flat = list(safe('HGETALL', key .. suffix))
        for j = 1, #flat, 2 do
          local tid, json = flat[j], flat[j + 1]
          if not seen[tid] then
            seen[tid] = true
            work[#work + 1] = {identity, tid, json, run_at(json) or math.huge}
          end
        end
      end
    end
  end
  table.sort(work, function(a, b)
    if a[4] ~= b[4] then return a[4] < b[4] end
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local slice = {}
  for i = start + 1, math.min(#work, start + count) do
    slice[#slice + 1] = {work[i][1], work[i][2], work[i][3]}
  end
  return {stats(), processes, #work, slice, safe('GET', k('dear-leader'))}
end
return redis.error_reply('kiqboard: unknown op ' .. tostring(op))
"""
PAGE_SCRIPT_SHA = hashlib.sha1(PAGE_SCRIPT.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Reading


def _str(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _bytes_view(client: redis.Redis) -> redis.Redis:
    """The client itself when it returns bytes; else a sibling on the same server that does.

    With decode_responses=True redis-py would raise UnicodeDecodeError on a non-UTF-8 job; a bytes view keeps such
    jobs displayable and gives Job.raw_bytes the exact stored member.
    """
    try:
        if not client.get_encoder().decode_responses:
            return client
        pool = client.connection_pool
        kwargs = {**pool.connection_kwargs, "decode_responses": False}
        sibling_pool = type(pool)(connection_class=pool.connection_class, max_connections=pool.max_connections,
                                  **kwargs)
        return type(client)(connection_pool=sibling_pool)
    except Exception:  # noqa: BLE001 - unusual client: fall back to it and normalise str replies
        return client


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches literally inside ``*...*``."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def clamp_count(count: Any, default: int) -> int:
    try:
        value = int(count)
    except (TypeError, ValueError):
        return default
    return min(max(value, 1), MAX_COUNT)


def clamp_page(page: Any) -> int:
    try:
        return max(int(page), 1)
    except (TypeError, ValueError):
        return 1


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class SidekiqReader:
    """Read-only access to one Sidekiq Redis (optionally redis-namespaced)."""

    def __init__(self, client: redis.Redis, namespace: str | None = None) -> None:
        self.client = _bytes_view(client)
        self.namespace = namespace or None
        self.prefix = f"{namespace}:" if namespace else ""

    def key(self, name: str) -> str:
        return self.prefix + name

    # ---- transport ------------------------------------------------------------------------------------------

    def _call(self, op: str, *args: Any, also: Sequence[tuple] = ()) -> tuple[Any, list]:
        """Run one op of PAGE_SCRIPT, with ``also`` commands pipelined in the same round trip.

        EVALSHA first; only if the server has not cached the script (NOSCRIPT) a second round trip sends EVAL with
        the body, which also caches it. redis-py's Script helper would add a SCRIPT EXISTS round trip in pipelines.
        """
        argv = (self.prefix, op, *args)
        if not also:
            try:
                return self.client.execute_command("EVALSHA", PAGE_SCRIPT_SHA, 0, *argv), []
            except redis.exceptions.NoScriptError:
                return self.client.execute_command("EVAL", PAGE_SCRIPT, 0, *argv), []
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", PAGE_SCRIPT_SHA, 0, *argv)
        for command in also:
            pipe.execute_command(*command)
        first, *rest = pipe.execute(raise_on_error=False)
        if isinstance(first, redis.exceptions.NoScriptError):
            first = self.client.execute_command("EVAL", PAGE_SCRIPT, 0, *argv)
        elif isinstance(first, Exception):
            raise first
        return first, rest

    def _call_many(self, calls: Sequence[tuple[str, tuple]]) -> list[Any]:
        """Several ops of PAGE_SCRIPT in one pipeline (one round trip; one more if the script is not cached)."""
        pipe = self.client.pipeline(transaction=False)
        for op, args in calls:
            pipe.execute_command("EVALSHA", PAGE_SCRIPT_SHA, 0, self.prefix, op, *args)
        replies = pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            pipe = self.client.pipeline(transaction=False)
            for i in missing:
                op, args = calls[i]
                pipe.execute_command("EVAL", PAGE_SCRIPT, 0, self.prefix, op, *args)
            for i, reply in zip(missing, pipe.execute(raise_on_error=False)):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # ---- decoding -------------------------------------------------------------------------------------------

    @staticmethod
    def _stats(raw: Sequence[Any], now: float | None = None) -> Stats:
        processed, failed, scheduled, retries, dead, processes, busy, enqueued, tail = (list(raw) + [None] * 9)[:9]
        return Stats(
            processed=_ruby_to_i(processed) or 0,
            failed=_ruby_to_i(failed) or 0,
            scheduled=int(scheduled or 0),
            retries=int(retries or 0),
            dead=int(dead or 0),
            processes=int(processes or 0),
            busy=int(busy or 0),
            enqueued=int(enqueued or 0),
            default_latency=job_latency(tail, _utc_now().timestamp() if now is None else now),
        )

    @staticmethod
    def _redis_info(info: Any) -> RedisInfo:
        if not isinstance(info, dict):  # INFO renamed/disabled (an error object from the pipeline)
            return RedisInfo(**FAKE_REDIS_INFO)
        values = {}
        for name in FAKE_REDIS_INFO:
            value = info.get(name)
            values[name] = "" if value is None else _str(value) or ""
        return RedisInfo(**values)

    @staticmethod
    def _entries(set_name: SetName, flat: Sequence[Any]) -> list[SortedEntry]:
        entries = []
        for member, score in zip(flat[0::2], flat[1::2]):
            entries.append(SortedEntry(set_name=set_name, score=float(_str(score) or 0), job=parse_job(member)))
        return entries

    @staticmethod
    def _process(identity: str, exists: int, fields: Sequence[Any]) -> Process:
        info_raw, busy, beat, quiet, rss, rtt_us, concurrency = (list(fields) + [None] * 7)[:7]
        info: dict = {}
        if info_raw is not None:
            ok, parsed = _load_json(_str(info_raw) or "")
            if ok and isinstance(parsed, dict):
                info = parsed
        quiet_text = _str(quiet)
        capsules = info.get("capsules") if isinstance(info.get("capsules"), dict) else {}
        queues = info.get("queues")
        if not isinstance(queues, list):
            # Sidekiq 8 deprecates top-level queues: collect them from the capsules' weights.
            queues = []
            for capsule in capsules.values():
                weights = capsule.get("weights") if isinstance(capsule, dict) else None
                if isinstance(weights, dict):
                    queues.extend(name for name in weights if name not in queues)
        labels = info.get("labels")
        labels = labels if isinstance(labels, list) else ([] if labels is None else [labels])
        hostname = info.get("hostname")
        if hostname is None:
            hostname = identity.rsplit(":", 2)[0] if identity.count(":") >= 2 else identity
        concurrency_value = _ruby_to_i(concurrency, default=None)
        if concurrency_value is None:
            concurrency_value = _int_or_none(info.get("concurrency")) or 0
        started = info.get("started_at")
        return Process(
            identity=identity,
            hostname=_text(hostname),
            pid=_int_or_none(info.get("pid")),
            tag=_optional_text(info.get("tag")) or None,
            labels=[_text(label) for label in labels],
            queues=[_text(queue) for queue in queues],
            weights=info.get("weights"),
            capsules=capsules,
            concurrency=concurrency_value,
            busy=_ruby_to_i(busy) or 0,
            beat=_datetime_from_seconds(b) if (b := _ruby_to_f(beat)) is not None else None,
            quiet=quiet_text in ("true", "stopping"),
            # 7.x+ heartbeat writes quiet="stopping" while shutting down (6.4.1's stopping? just meant quiet).
            stopping=quiet_text == "stopping",
            rss_kb=_ruby_to_i(rss, default=None),
            rtt_us=_ruby_to_i(rtt_us, default=None),
            version=_optional_text(info.get("version")),
            started_at=job_time(float(started)) if isinstance(started, (int, float)) and not isinstance(started, bool)
            else None,
            embedded=info.get("embedded") is True,
            alive=bool(exists) and info_raw is not None,
            info=info,
        )

    @staticmethod
    def _work(identity: str, tid: str, raw: Any) -> Work:
        text = _str(raw) or ""
        ok, entry = _load_json(text)
        if not ok or not isinstance(entry, dict):
            return Work(identity=identity, tid=tid, queue="", run_at=None, job=parse_job(raw if raw is not None
                                                                                        else b""))
        payload = entry.get("payload")
        if isinstance(payload, (str, dict)):
            job = parse_job(payload)  # a JSON string since 6.0, an object in 5.x
        else:
            job = parse_job(_text(payload))
        queue = _optional_text(entry.get("queue")) or job.queue or ""
        return Work(identity=identity, tid=tid, queue=queue, run_at=job_time(entry.get("run_at")), job=job)

    # ---- plain reads ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        reply, _ = self._call("stats")
        return self._stats(reply[0])

    def redis_info(self) -> RedisInfo:
        try:
            info = self.client.info()
        except redis.exceptions.ResponseError:
            info = None
        return self._redis_info(info)

    def stats_json(self) -> dict:
        """Sidekiq Web's ``GET /stats``, in one round trip."""
        reply, (info,) = self._call("stats", also=[("INFO",)])
        return {
            "sidekiq": self._stats(reply[0]).as_sidekiq_json(),
            "redis": self._redis_info(info).as_sidekiq_json(),
            "server_utc_time": _utc_now().strftime("%H:%M:%S UTC"),
        }

    def queue_sizes(self) -> dict[str, int]:
        """Sidekiq Web's ``GET /stats/queues``: name -> size, largest first."""
        reply, _ = self._call("queue_sizes")
        rows = [(_str(name) or "", int(size or 0)) for name, size in reply[1]]
        return dict(sorted(rows, key=lambda row: -row[1]))

    # ---- pages (each <= 2 round trips, normally 1) ----------------------------------------------------------

    def dashboard(self, days: int = 30) -> DashboardData:
        days = min(max(int(days), 1), MAX_DAYS)
        today = _utc_now().date()
        dates = [today - dt.timedelta(days=offset) for offset in range(days)]
        reply, (info,) = self._call("dashboard", *(d.isoformat() for d in dates), also=[("INFO",)])
        processed = [(_ruby_to_i(v) or 0) if v is not None else 0 for v in reply[1]]
        failed = [(_ruby_to_i(v) or 0) if v is not None else 0 for v in reply[2]]
        processed += [0] * (days - len(processed))
        failed += [0] * (days - len(failed))
        return DashboardData(
            stats=self._stats(reply[0]),
            history=History(dates=dates, processed=processed[:days], failed=failed[:days]),
            redis=self._redis_info(info),
        )

    def busy(self, page: int = 1, count: int = 100) -> BusyData:
        """Processes plus one page of running jobs, sorted by run_at (oldest first) like Sidekiq."""
        page, count = clamp_page(page), clamp_count(count, 100)
        reply, _ = self._call("busy", (page - 1) * count, count)
        stats_raw, processes_raw, total, slice_raw, leader = reply
        processes = [self._process(_str(identity) or "", exists, fields or [])
                     for identity, exists, fields in processes_raw]
        work = [self._work(_str(identity) or "", _str(tid) or "", raw) for identity, tid, raw in slice_raw]
        return BusyData(
            stats=self._stats(stats_raw),
            processes=processes,
            work=Page(items=work, page=page, count=count, total=int(total)),
            leader=_str(leader) or None,
        )

    def queues(self) -> QueuesData:
        reply, _ = self._call("queues")
        now = _utc_now().timestamp()
        summaries = [
            QueueSummary(name=_str(name) or "", size=int(size or 0), latency=job_latency(tail, now), paused=bool(paused))
            for name, size, tail, paused in reply[1]
        ]
        summaries.sort(key=lambda queue: queue.name)
        return QueuesData(stats=self._stats(reply[0], now), queues=summaries)

    def overview(self, days: int = 7) -> OverviewData:
        """Stats, ``days`` of history, every queue's size and latency, and the thread count: one round trip."""
        days = min(max(int(days), 1), MAX_DAYS)
        now = _utc_now()
        dates = [now.date() - dt.timedelta(days=offset) for offset in range(days)]
        reply, _ = self._call("overview", *(d.isoformat() for d in dates))
        stats_raw, processed_raw, failed_raw, rows, threads = reply
        processed = [(_ruby_to_i(v) or 0) if v is not None else 0 for v in processed_raw]
        failed = [(_ruby_to_i(v) or 0) if v is not None else 0 for v in failed_raw]
        processed += [0] * (days - len(processed))
        failed += [0] * (days - len(failed))
        timestamp = now.timestamp()
        queues = [
            QueueSummary(name=_str(name) or "", size=int(size or 0), latency=job_latency(tail, timestamp),
                         paused=bool(paused))
            for name, size, tail, paused in rows
        ]
        queues.sort(key=lambda queue: queue.name)
        return OverviewData(
            stats=self._stats(stats_raw, timestamp),
            history=History(dates=dates, processed=processed[:days], failed=failed[:days]),
            queues=queues,
            threads=int(threads or 0),
        )

    def queue(self, name: str, page: int = 1, count: int = 25, ascending: bool = False) -> QueueData:
        """One queue's jobs: newest first (list head), or oldest first (next to run) with ``ascending``."""
        page, count = clamp_page(page), clamp_count(count, 25)
        start = (page - 1) * count
        stop = start + count - 1
        reply, _ = self._call("queue", name, start, stop, "asc" if ascending else "desc")
        stats_raw, size, members, paused = reply
        size = int(size or 0)
        if ascending:
            members = list(reversed(members))
            # LRANGE -stop-1 -start-1 returned positive indexes first..first+n-1, now reversed.
            first = max(0, size - stop - 1)
            indexes = [first + len(members) - 1 - i for i in range(len(members))]
        else:
            indexes = [start + i for i in range(len(members))]
        jobs = [QueuedJob(index=index, job=parse_job(member, queue=name)) for index, member in zip(indexes, members)]
        return QueueData(
            stats=self._stats(stats_raw), name=name, paused=bool(paused),
            jobs=Page(items=jobs, page=page, count=count, total=size),
        )

    def sorted_set(self, name: SetName, page: int = 1, count: int = 25, substr: str | None = None) -> SetData:
        """retry/schedule ascending by score, dead descending. ``substr`` filters the whole set (bounded ZSCAN)."""
        _check_set_name(name)
        page, count = clamp_page(page), clamp_count(count, 25)
        start = (page - 1) * count
        direction = "desc" if name == "dead" else "asc"
        if substr:
            stats_raw, matches, truncated = self._scan(name, substr, SEARCH_MATCH_LIMIT, with_stats=True)
            matches.sort(key=lambda entry: (-entry.score if direction == "desc" else entry.score, entry.job.raw_bytes))
            return SetData(
                stats=self._stats(stats_raw), name=name, substr=substr,
                entries=Page(items=matches[start:start + count], page=page, count=count, total=len(matches)),
                truncated=truncated,
            )
        reply, _ = self._call("set", name, start, start + count - 1, direction)
        stats_raw, total, flat = reply
        return SetData(
            stats=self._stats(stats_raw), name=name, substr=None,
            entries=Page(items=self._entries(name, flat), page=page, count=count, total=int(total)),
        )

    def entry(self, name: SetName, key: str) -> EntryData:
        _check_set_name(name)
        parsed = parse_key(key)
        if parsed is None:
            return EntryData(stats=self.stats(), entry=None)
        reply, _ = self._call("entry", name, repr(parsed[0]))
        return EntryData(stats=self._stats(reply[0]), entry=self._matching(name, reply[1], parsed[1]))

    def find_entry(self, name: SetName, key: str) -> SortedEntry | None:
        _check_set_name(name)
        parsed = parse_key(key)
        if parsed is None:
            return None
        reply, _ = self._call("find", name, repr(parsed[0]))
        return self._matching(name, reply[1], parsed[1])

    def _matching(self, name: SetName, flat: Sequence[Any], jid: str) -> SortedEntry | None:
        # Unlike Sidekiq's remove_job, a lone entry with the same score but another jid is not "the" entry.
        for entry in self._entries(name, flat):
            if entry.job.jid == jid:
                return entry
        return None

    def _scan(self, name: SetName, substr: str, max_matches: int, with_stats: bool = False,
              first_reply: Any = None) -> tuple[Any, list[SortedEntry], bool]:
        """Entries of one set whose stored JSON contains ``substr`` (ZSCAN MATCH, bounded; see SEARCH_*).

        Returns (raw stats or None, matches in scan order, truncated). More than one round trip for big sets.
        ``first_reply`` is the set's first chunk when the caller already fetched it (pipelined with other sets).
        """
        pattern = f"*{glob_escape(substr)}*"
        max_calls = max(1, SEARCH_SCAN_LIMIT // (SEARCH_SCAN_STEP * SEARCH_STEPS_PER_CALL))
        cursor: Any = "0"
        stats_raw = None
        seen: set[bytes] = set()
        matches: list[SortedEntry] = []
        for call in range(max_calls):
            if call == 0 and first_reply is not None:
                reply = first_reply
            else:
                op = "scan_stats" if with_stats and call == 0 else "scan"
                reply, _ = self._call(op, *self._scan_args(name, cursor, pattern))
            if call == 0:
                stats_raw = reply[0]
            cursor = _str(reply[1]) or "0"
            flat = reply[2]
            for member, score in zip(flat[0::2], flat[1::2]):
                member_bytes = _as_bytes(member)
                if member_bytes in seen:  # SCAN may return an element twice
                    continue
                seen.add(member_bytes)
                matches.append(SortedEntry(set_name=name, score=float(_str(score) or 0), job=parse_job(member)))
            if len(matches) >= max_matches:
                return stats_raw, matches[:max_matches], True
            if cursor == "0":
                return stats_raw, matches, False
        return stats_raw, matches, True

    @staticmethod
    def _scan_args(name: str, cursor: Any, pattern: str) -> tuple:
        return (name, cursor, pattern, SEARCH_STEPS_PER_CALL, SEARCH_SCAN_STEP)

    def search_jid(self, jid_or_substr: str, limit: int = 50) -> list[SortedEntry]:
        """Entries of retry, schedule and dead whose JSON contains the text: exact jid matches first, then by set
        (retry, schedule, dead) and time. Bounded like filtered views; at most ``limit`` (<= 1000) results.
        """
        if not jid_or_substr:
            return []
        limit = clamp_count(limit, 50)
        pattern = f"*{glob_escape(jid_or_substr)}*"
        # First chunk of all three sets in one pipeline: small sets are searched in a single round trip.
        firsts = self._call_many([("scan", self._scan_args(name, "0", pattern)) for name in SET_NAMES])
        found: list[SortedEntry] = []
        for name, first in zip(SET_NAMES, firsts):
            matches, _ = self._scan(name, jid_or_substr, limit - len(found), first_reply=first)[1:]
            matches.sort(key=lambda entry: -entry.score if name == "dead" else entry.score)
            found.extend(matches)
            if len(found) >= limit:
                break
        found.sort(key=lambda entry: entry.job.jid != jid_or_substr)
        return found[:limit]


def _check_set_name(name: str) -> None:
    if name not in SET_NAMES:
        raise ValueError(f"not a Sidekiq job set: {name!r}")
