"""The mutations a dashboard performs on a Sidekiq Redis: retry, add to queue, kill, delete, quiet, stop.

No Flask in here. Semantics follow Sidekiq 6.4.1's ``api.rb`` (``SortedEntry#retry/kill/add_to_queue/delete``,
``DeadSet#kill``, ``Queue#clear``, ``Process#quiet!/stop!``) with its gaps closed:

* Every move (remove a member from ``retry``/``schedule``/``dead`` and push it to a queue or to ``dead``) is ONE Lua
  script. The member is the one at exactly that score whose decoded ``jid`` matches (Sidekiq's ``remove_job`` takes
  a lone same-score neighbour without checking). Inside a script nothing else runs, so racing Sidekiq's scheduler
  poller (its own Lua ``ZRANGEBYSCORE … LIMIT 0 1`` + ``ZREM``) or a second operator always has exactly one winner:
  whoever removes the member pushes it; the other finds nothing and does nothing.
* Within a script the push is written before the removal and key types are checked up front, so a Redis error
  (``WRONGTYPE``, out-of-memory on the first write) aborts before anything changed; a crash of Redis itself loses or
  keeps the whole script (AOF writes a script's effects as one MULTI/EXEC block).
* Payloads are edited as text, not re-encoded: Redis's cjson would turn ``[]`` into ``{}`` and round numbers to 14
  digits. Retrying replaces only ``retry_count`` (− 1 when it is a number) and ``enqueued_at`` (added when absent),
  byte for byte everything else stays as it was. ``enqueued_at`` is written in the job's own unit: integer epoch
  milliseconds when ``created_at`` is an integer (Sidekiq 8), float epoch seconds otherwise.
* Bulk "all" actions run batched scripts (``batch_size`` members per call) from the lowest score up, bounded by the
  set's size when they started (Sidekiq 6.4.1 loops ``while size > 0`` and may never end), and report progress.
  Each batch is read, edited and moved inside one script (the same text surgery, in Lua); members it can't prove
  safe to edit there come back to Python's editor and the generic move script.

Keys (``SCORE-JID``) are parsed with ``sidekiq_reader.parse_key``. Every method returns what happened as a number;
scripts never return payloads, so clients with ``decode_responses`` True or False behave the same.
Unlike Sidekiq, killing from here cannot run the app's Ruby death handlers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Literal

import redis

from sidekiq_reader import parse_key

SetName = Literal["retry", "schedule", "dead"]
Progress = Callable[[int, int], None]

DEFAULT_BATCH_SIZE = 2000
SIGNALS = {"quiet": "TSTP", "stop": "TERM"}

# Status codes one move reports (per key for selected actions).
MOVED = 1
NOT_FOUND = 0  # no member at that score with that jid (already moved, re-scored or deleted)
UNMOVABLE = -1  # the member is not a JSON object we can edit; left where it is
WRONG_TYPE = -2  # the target queue key holds something other than a list; left where it is

# What both move scripts share: type checks, the per-queue push lists, and the write phase, in which pushes (or
# ZADD dead) come before the removals.
_LUA_SHARED = r"""
local CHUNK = 1000

local function type_of(key)
  local t = redis.call("TYPE", key)
  if type(t) == "table" then t = t.ok end
  return t
end

-- An error reply when the destination (`dead` for a kill, the `queues` set for a push) holds another type.
local function wrong_destination(kill, dead, queues_key)
  if kill then
    local t = type_of(dead)
    if t ~= "none" and t ~= "zset" then return redis.error_reply("WRONGTYPE " .. dead .. " is not a sorted set") end
  else
    local t = type_of(queues_key)
    if t ~= "none" and t ~= "set" then return redis.error_reply("WRONGTYPE " .. queues_key .. " is not a set") end
  end
  return nil
end

-- Queues the payload for queue q; false when queue:q holds another type (the job is then left in place).
local function plan_push(plan, prefix, q, payload)
  local qkey = plan.qkeys[q]
  if qkey == nil then
    qkey = prefix .. "queue:" .. q
    local t = type_of(qkey)
    if t ~= "none" and t ~= "list" then qkey = false end
    plan.qkeys[q] = qkey
  end
  if not qkey then return false end
  local list = plan.pushes[q]
  if not list then
    list = {}
    plan.pushes[q] = list
    plan.order[#plan.order + 1] = q
  end
  list[#list + 1] = payload
  return true
end

local function new_plan()
  return {pushes = {}, order = {}, qkeys = {}}
end

local function write_moves(plan, kill, src, dead, queues_key, taken, now_s, dead_cutoff, dead_rank)
  for _, q in ipairs(plan.order) do
    local list = plan.pushes[q]
    for a = 1, #list, CHUNK do redis.call("LPUSH", plan.qkeys[q], unpack(list, a, math.min(a + CHUNK - 1, #list))) end
    redis.call("SADD", queues_key, q)
  end
  if kill and #taken > 0 then
    for a = 1, #taken, CHUNK do
      local args = {}
      for k = a, math.min(a + CHUNK - 1, #taken) do
        args[#args + 1] = now_s
        args[#args + 1] = taken[k]
      end
      redis.call("ZADD", dead, unpack(args))
    end
  end
  for a = 1, #taken, CHUNK do redis.call("ZREM", src, unpack(taken, a, math.min(a + CHUNK - 1, #taken))) end
  if kill and #taken > 0 then
    redis.call("ZREMRANGEBYSCORE", dead, "-inf", dead_cutoff)
    redis.call("ZREMRANGEBYRANK", dead, 0, dead_rank)
  end
end
"""

# ---------------------------------------------------------------------------------------------------------------
# The move script. KEYS = {source set, dead, queues}.
# ARGV = {mode, prefix, now_s, dead_cutoff, dead_rank, with_scores ("1"/"0"),
#         then groups: QUEUE, COUNT, COUNT items of (member[, score if with_scores][, payload if mode is push])}
#   mode "push": LPUSH payload to PREFIX..queue:QUEUE + SADD queues QUEUE; "kill": ZADD dead now member;
#   "delete": nothing more. In every mode the member is removed from the source set.
#   with_scores (selected keys): the member must still have exactly that score. Statuses come back in item order.
# Per item: 1 moved, 0 gone (not in the set, or not at that score, or a duplicate in this call), -2 the queue key
# holds another type (left in place). Nothing is written before every item is planned and every key type checked,
# and then pushes come before removals, so an error can't leave a job removed but not pushed; Redis applies a
# script's writes all or nothing (one MULTI/EXEC in the AOF and to replicas), so a crash can't either.
# ---------------------------------------------------------------------------------------------------------------
_LUA_MOVE = _LUA_SHARED + r"""
local src, dead, queues_key = KEYS[1], KEYS[2], KEYS[3]
local mode, prefix, now_s, dead_cutoff, dead_rank = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local with_scores = ARGV[6] == "1"
local kill = mode == "kill"
local stride = 1
if with_scores then stride = stride + 1 end
if mode == "push" then stride = stride + 1 end

if mode == "push" or kill then
  local err = wrong_destination(kill, dead, queues_key)
  if err then return err end
end

-- Unpack the groups: queue, count, then count items of (member[, score][, payload]).
local members, wants, payloads, queues = {}, {}, {}, {}
local i = 7
while i <= #ARGV do
  local q, count = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, count do
    local n = #members + 1
    members[n] = ARGV[i]
    queues[n] = q
    if with_scores then wants[n] = ARGV[i + 1] end
    if mode == "push" then payloads[n] = ARGV[i + stride - 1] end
    i = i + stride
  end
end
local n = #members

-- Current scores of all members (ZMSCORE: Redis 6.2+; ZSCORE one by one on older servers).
local scores = {}
for a = 1, n, CHUNK do
  local b = math.min(a + CHUNK - 1, n)
  local ok, got = pcall(redis.call, "ZMSCORE", src, unpack(members, a, b))
  if ok then
    for k = a, b do scores[k] = got[k - a + 1] end
  else
    for k = a, b do scores[k] = redis.call("ZSCORE", src, members[k]) end
  end
end

-- Plan (no writes yet).
local status, taken, seen = {}, {}, {}
local plan = new_plan()
for k = 1, n do
  local m, score = members[k], scores[k]
  local st = 0
  if score and not seen[m] and (not with_scores or tonumber(score) == tonumber(wants[k])) then
    st = 1
    if mode == "push" and not plan_push(plan, prefix, queues[k], payloads[k]) then st = -2 end
    if st == 1 then
      seen[m] = true
      taken[#taken + 1] = m
    end
  end
  status[k] = st
end

write_moves(plan, kill, src, dead, queues_key, taken, now_s, dead_cutoff, dead_rank)
return status
"""

# ---------------------------------------------------------------------------------------------------------------
# The bulk script: one batch of a "… all" action, read and moved inside Redis, so payloads never travel to Python
# and back. KEYS = {source set, dead, queues}; ARGV = {mode ("retry", "enqueue" or "kill"), prefix, offset, count,
# now_s, now_ms, dead_cutoff, dead_rank}. Takes ZRANGE offset..offset+count-1 (ranks below offset are members
# stepped over earlier) and returns {members looked at, moved, left in place, {members for Python}}: from the first
# member it can't edit on, the rest of the batch goes back to Python (still in the set).
#
# Payloads are edited with plain string search, not cjson (cjson turns [] into {}, rounds numbers, and costs ~2× the
# Redis CPU). A field is edited here only when its key text is provably a top-level key (same proof as
# _fast_fields: occurs once, right after "{" or ",", and before the first "[" / "{" or after the last "]" / "}");
# a member whose proof fails, or that has any "\u" escape (a key could be spelled with one), is left in the set
# and returned for Python's careful editor, which moves it with the generic script.
# ---------------------------------------------------------------------------------------------------------------
_LUA_MOVE_ALL = _LUA_SHARED + r"""
local src, dead, queues_key = KEYS[1], KEYS[2], KEYS[3]
local mode, prefix = ARGV[1], ARGV[2]
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local now_s, now_ms, dead_cutoff, dead_rank = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local decrement = mode == "retry"
local kill = mode == "kill"
local find, byte, sub, match = string.find, string.byte, string.sub, string.match

local err = wrong_destination(kill, dead, queues_key)
if err then return err end

-- Where the key HEAD .. TAIL starts and where its value starts (the key's bytes H1.. before TAIL, HLEN of them);
-- nil when absent; false when it is there but not as one plainly written key right after "{" or ",". TAIL starts
-- with a rarer letter than '"': plain find stops at every occurrence of the needle's first byte, and '"' would stop
-- at every string. TAIL without its ":" also finds spellings with blanks ('"queue" :'), which go to Python.
local function key_at(raw, tail_colon, tail, hlen, h1, h2, h3, h4, h5)
  local p = find(raw, tail_colon, 2, true)
  if not p then
    if find(raw, tail, 2, true) then return false end
    return nil
  end
  local s = p - hlen
  if s < 2 or find(raw, tail, p + #tail, true) then return false end
  local b, x1, x2, x3, x4, x5 = byte(raw, s - 1, p - 1)
  if (b ~= 123 and b ~= 44) or x1 ~= h1 or x2 ~= h2 or x3 ~= h3 or x4 ~= h4 or x5 ~= h5 then return false end
  return s, p + #tail_colon
end

-- (payload, queue) or nil when Python has to edit this member.
local function edit(raw)
  local n = #raw
  if byte(raw, 1) ~= 123 or byte(raw, n) ~= 125 or find(raw, "\\u", 2, true) then return nil end
  local qs, qv = key_at(raw, 'queue":', 'queue"', 1, 34)                     -- "queue"
  local cs, cv = key_at(raw, 'created_at":', 'created_at"', 1, 34)           -- "created_at"
  local es, ev = key_at(raw, 'queued_at":', 'queued_at"', 3, 34, 101, 110)   -- "enqueued_at"
  local rs, rv
  if decrement then rs, rv = key_at(raw, 'y_count":', 'y_count"', 5, 34, 114, 101, 116, 114) end  -- "retry_count"
  if qs == false or cs == false or es == false or rs == false then return nil end

  -- Top level: before the first "[" / "{", or with no "]" / "}" after it (brackets inside strings can only make
  -- this fail, never pass wrongly).
  local first_open = find(raw, "[", 2, true) or n
  local o = find(raw, "{", 2, true)
  if o and o < first_open then first_open = o end
  local late = n
  if qs and qs > first_open then late = qs end
  if cs and cs > first_open and cs < late then late = cs end
  if es and es > first_open and es < late then late = es end
  if rs and rs > first_open and rs < late then late = rs end
  if late < n then
    local c = find(raw, "]", late, true)
    if (c and c < n) or find(raw, "}", late, true) < n then return nil end
  end

  local queue = "default"
  if qs then
    queue = match(raw, '^"([^"\\]*)"', qv)
    if not queue then return nil end
    if queue == "" then queue = "default" end
  end

  local stamp = now_s
  if cs then
    local c = match(raw, "^-?%d+(.)", cv)
    if c == "," or c == "}" then stamp = now_ms elseif c ~= "." and c ~= "e" and c ~= "E" then return nil end
  end

  local re, rnew
  if rs then
    local digits = match(raw, "^(-?%d+)[,}]", rv)
    if not digits or #digits > 9 then return nil end
    re, rnew = rv + #digits - 1, digits - 1  -- a number; ".." writes it as an integer
  end

  if ev then
    local _, e = find(raw, "^-?%d[%d.eE+-]*[,}]", ev)
    if not e then return nil end
    if not rs then return sub(raw, 1, ev - 1) .. stamp .. sub(raw, e), queue end
    if rv < ev then
      return sub(raw, 1, rv - 1) .. rnew .. sub(raw, re + 1, ev - 1) .. stamp .. sub(raw, e), queue
    end
    return sub(raw, 1, ev - 1) .. stamp .. sub(raw, e, rv - 1) .. rnew .. sub(raw, re + 1), queue
  end
  local sep = ","
  if n == 2 then sep = "" else
    local c = byte(raw, n - 1)
    if c == 32 or c == 9 or c == 10 or c == 13 then return nil end
  end
  if rs then
    return sub(raw, 1, rv - 1) .. rnew .. sub(raw, re + 1, n - 1) .. sep .. '"enqueued_at":' .. stamp .. "}", queue
  end
  return sub(raw, 1, n - 1) .. sep .. '"enqueued_at":' .. stamp .. "}", queue
end

local members = redis.call("ZRANGE", src, offset, offset + count - 1)

-- Plan (no writes yet).
local taken, for_python, plan = {}, {}, new_plan()
local left = 0
if kill then
  taken = members
else
  for k = 1, #members do
    local raw = members[k]
    local payload, q = edit(raw)
    if payload == nil then
      -- Python edits the rest of the batch, so jobs are still pushed in score order (lowest runs first).
      for j = k, #members do for_python[#for_python + 1] = members[j] end
      break
    elseif plan_push(plan, prefix, q, payload) then
      taken[#taken + 1] = raw
    else
      left = left + 1
    end
  end
end

write_moves(plan, kill, src, dead, queues_key, taken, now_s, dead_cutoff, dead_rank)
return {#members, #taken, left, for_python}
"""

_LUA_DELETE_ALL = r"""
local n = redis.call("ZCARD", KEYS[1])
redis.call("UNLINK", KEYS[1])
return n
"""

# KEYS = {queue:NAME, queues}; ARGV = {NAME}. True (1) when there was a list or a registration to remove.
_LUA_DELETE_QUEUE = r"""
local existed = redis.call("UNLINK", KEYS[1])
local registered = redis.call("SREM", KEYS[2], ARGV[1])
if existed + registered > 0 then return 1 end
return 0
"""

# KEYS = {processes}; ARGV = {prefix, signal, all ("1" or "0"), identity...}
# 1 signalled, 0 not in processes (or its hash expired, for "all"), -1 embedded (Sidekiq 7+ refuses to signal those).
_LUA_SIGNAL = r"""
local prefix, sig, all = ARGV[1], ARGV[2], ARGV[3] == "1"
local identities = {}
if all then
  identities = redis.call("SMEMBERS", KEYS[1])
else
  for i = 4, #ARGV do identities[#identities + 1] = ARGV[i] end
end
local res = {}
for _, identity in ipairs(identities) do
  local status = 0
  if redis.call("SISMEMBER", KEYS[1], identity) == 1 then
    local info = redis.call("HGET", prefix .. identity, "info")
    if info or not all then
      status = 1
      if info then
        local ok, parsed = pcall(cjson.decode, info)
        if ok and type(parsed) == "table" and parsed["embedded"] == true then status = -1 end
      end
    end
  end
  if status == 1 then
    local key = prefix .. identity .. "-signals"
    redis.call("LPUSH", key, sig)
    redis.call("EXPIRE", key, 60)
  end
  res[#res + 1] = status
end
return res
"""


def _float_text(value: float) -> str:
    """A float as text that Redis parses back to exactly the same double (Python's repr round-trips)."""
    return repr(float(value))


# ---------------------------------------------------------------------------------------------------------------
# Payload editing: text surgery, so every byte except the changed values stays as it was.
# ---------------------------------------------------------------------------------------------------------------
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(rb"-?\d+")
_PLAIN_STRING = re.compile(rb'"([^"\\]*)"')
_WS = re.compile(r"[ \t\n\r]*")
_scan_value = json.JSONDecoder().scan_once
_scan_string = json.decoder.scanstring


class _Ambiguous(Exception):
    """The fast textual path can't prove where a top-level key is: parse the whole object instead."""


def _fast_fields(raw: bytes, decrement: bool) -> dict[str, tuple[int, int]]:
    """Spans of the top-level values we edit or read, found by plain search (bytes.find runs at memchr speed).

    A key's text is trusted only when it occurs once, right after "{" or ",", and provably at the top level: before
    the first "[" / "{" after the opening brace (no container open yet) or after the last "]" / "}" before the
    closing one (no container still open). Brackets inside strings only make the proof fail, never succeed
    wrongly. Anything else raises _Ambiguous and the caller parses the whole object.
    """
    last = len(raw) - 1
    if raw[:1] != b"{" or raw[last:] != b"}":
        raise _Ambiguous
    opens = [p for p in (raw.find(b"[", 1), raw.find(b"{", 1)) if p >= 0]
    first_open = min(opens) if opens else last
    last_close = max(raw.rfind(b"]", 0, last), raw.rfind(b"}", 0, last))
    find = raw.find
    fields = {}
    for name, key, value_re in _FAST_KEYS:
        if value_re is None and not decrement:
            continue
        position = find(key)
        if position < 0:
            if find(key[:-1]) >= 0:  # spelled with blanks ('"queue" :'): only the parser knows
                raise _Ambiguous
            continue
        end = position + len(key)
        if find(key, end) >= 0 or raw[position - 1] not in b"{," or first_open < position < last_close + 1:
            raise _Ambiguous
        match = (value_re or _NUMBER).match(raw, end)
        if match is None:
            raise _Ambiguous
        fields[name] = match.span(match.lastindex or 0)
    return fields


_FAST_KEYS = (
    ("queue", b'"queue":', _PLAIN_STRING),
    ("created_at", b'"created_at":', _NUMBER),
    ("enqueued_at", b'"enqueued_at":', _NUMBER),
    ("retry_count", b'"retry_count":', None),  # only when decrementing
)


def _parsed_fields(text: str) -> tuple[dict[str, tuple[int, int, object]], int]:
    """Every top-level key of a JSON object: {key: (value_start, value_end, value)} and the closing brace's index."""
    i = _WS.match(text, 0).end()
    if text[i:i + 1] != "{":
        raise ValueError("not a JSON object")
    i = _WS.match(text, i + 1).end()
    fields: dict[str, tuple[int, int, object]] = {}
    if text[i:i + 1] == "}":
        close = i
    else:
        while True:
            if text[i:i + 1] != '"':
                raise ValueError("expected a key")
            key, i = _scan_string(text, i + 1)
            i = _WS.match(text, i).end()
            if text[i:i + 1] != ":":
                raise ValueError("expected ':'")
            start = _WS.match(text, i + 1).end()
            try:
                value, end = _scan_value(text, start)
            except StopIteration:
                raise ValueError("bad value") from None
            fields[key] = (start, end, value)
            i = _WS.match(text, end).end()
            if text[i:i + 1] == "}":
                close = i
                break
            if text[i:i + 1] != ",":
                raise ValueError("expected ',' or '}'")
            i = _WS.match(text, i + 1).end()
    if text[close + 1:].strip(" \t\n\r"):
        raise ValueError("trailing data")
    return fields, close


def _decremented(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # Ruby's `msg["retry_count"] -= 1 if msg["retry_count"]` would raise; leave it alone
    return str(value - 1) if isinstance(value, int) else repr(value - 1)


def edit_payload(raw: bytes, decrement: bool, now: float) -> tuple[bytes, str] | None:
    """The payload to push and its queue: ``retry_count`` − 1 (when ``decrement`` and it is a number), a fresh
    ``enqueued_at`` (integer ms when ``created_at`` is an integer, as in Sidekiq 8; float seconds otherwise; added at
    the end when absent). Every other byte is unchanged. None when ``raw`` is not a JSON object."""
    now_s, now_ms = _float_text(now).encode(), str(int(now * 1000)).encode()
    try:
        spans = _fast_fields(raw, decrement)
    except _Ambiguous:
        return _edit_parsed(raw, decrement, now_s, now_ms)
    edits = []
    if "retry_count" in spans:
        start, end = spans["retry_count"]
        text = raw[start:end]
        new = _decremented(int(text) if _INTEGER.fullmatch(text) else float(text))
        edits.append((start, end, new.encode()))
    created = spans.get("created_at")
    stamp = now_ms if created and _INTEGER.fullmatch(raw, *created) else now_s
    if "enqueued_at" in spans:
        start, end = spans["enqueued_at"]
        edits.append((start, end, stamp))
    else:
        close = len(raw) - 1
        edits.append((close, close, (b',"enqueued_at":' if raw[1:close].strip() else b'"enqueued_at":') + stamp))
    queue = spans.get("queue")
    queue_name = raw[queue[0]:queue[1]].decode("utf-8", "surrogateescape") if queue else ""
    return _splice(raw, edits), queue_name or "default"


def _edit_parsed(raw: bytes, decrement: bool, now_s: bytes, now_ms: bytes) -> tuple[bytes, str] | None:
    text = raw.decode("utf-8", "surrogateescape")
    try:
        fields, close = _parsed_fields(text)
    except ValueError:
        return None
    edits = []
    if decrement and "retry_count" in fields:
        start, end, value = fields["retry_count"]
        new = _decremented(value)
        if new is not None:
            edits.append((start, end, new))
    created = fields.get("created_at")
    stamp = (now_ms if created and isinstance(created[2], int) and not isinstance(created[2], bool) else now_s).decode()
    if "enqueued_at" in fields:
        start, end, _ = fields["enqueued_at"]
        edits.append((start, end, stamp))
    else:
        edits.append((close, close, (',"enqueued_at":' if fields else '"enqueued_at":') + stamp))
    queue = fields.get("queue", (0, 0, None))[2]
    queue = queue if isinstance(queue, str) and queue else "default"
    return _splice(text, edits).encode("utf-8", "surrogateescape"), queue


def _splice(data, edits):
    edits.sort()
    out, position = [], 0
    for start, end, new in edits:
        out.append(data[position:start])
        out.append(new)
        position = end
    out.append(data[position:])
    return data[:0].join(out)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


class SidekiqActions:
    """Mutations on one Sidekiq Redis (optionally redis-namespaced)."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str | None = None,
        dead_max_jobs: int = 10_000,
        dead_timeout: float = 180 * 86400,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.namespace = namespace or None
        self.prefix = f"{namespace}:" if namespace else ""
        self.dead_max_jobs = int(dead_max_jobs)
        self.dead_timeout = float(dead_timeout)
        self.batch_size = int(batch_size)
        self._move = client.register_script(_LUA_MOVE)
        self._move_all = client.register_script(_LUA_MOVE_ALL)
        self._delete_all = client.register_script(_LUA_DELETE_ALL)
        self._delete_queue = client.register_script(_LUA_DELETE_QUEUE)
        self._signal = client.register_script(_LUA_SIGNAL)

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- single / selected -------------------------------------------------------------------------------------

    def retry(self, set_name: SetName, keys: Iterable[str]) -> int:
        """Retry entries of ``retry`` or ``dead`` now: push each to its queue (retry_count − 1, fresh enqueued_at)."""
        _check_set(set_name, ("retry", "dead"))
        return _count(self.statuses("retry", set_name, keys))

    def add_to_queue(self, keys: Iterable[str]) -> int:
        """Push scheduled entries to their queues now (fresh enqueued_at)."""
        return _count(self.statuses("enqueue", "schedule", keys))

    def kill(self, keys: Iterable[str]) -> int:
        """Move retry entries to ``dead`` (score now), then Sidekiq's trims."""
        return _count(self.statuses("kill", "retry", keys))

    def delete(self, set_name: SetName, keys: Iterable[str]) -> int:
        """Remove entries (the exact member with that score and jid)."""
        _check_set(set_name, ("retry", "schedule", "dead"))
        return _count(self.statuses("delete", set_name, keys))

    def statuses(self, mode: str, set_name: SetName, keys: Iterable[str]) -> list[int]:
        """One status per key: MOVED, NOT_FOUND, UNMOVABLE or WRONG_TYPE (the detail behind retry/kill/… counts).

        The member is the one at exactly that score whose decoded jid matches (never a same-score neighbour); the
        script moves it only if it still has that score, so a job re-scored or taken meanwhile is NOT_FOUND.
        Malformed keys are NOT_FOUND.
        """
        if mode not in ("retry", "enqueue", "kill", "delete"):
            raise ValueError(f"unknown mode {mode!r}")
        keys = list(keys)
        results = [NOT_FOUND] * len(keys)
        wanted = []
        for index, key in enumerate(keys):
            parsed = parse_key(key)
            if parsed is not None:
                wanted.append((index, _float_text(parsed[0]), parsed[1]))
        source = self.key(set_name)
        for start in range(0, len(wanted), self.batch_size):
            chunk = wanted[start:start + self.batch_size]
            pipe = self.client.pipeline(transaction=False)
            for _, score, _ in chunk:
                pipe.zrangebyscore(source, score, score)
            found = pipe.execute()
            now = time.time()
            items, indexes = [], []
            for (index, score, jid), members in zip(chunk, found):
                member = _matching(members, jid)
                if member is None:
                    continue
                item = self._item(mode, member, score, now)
                if item is None:
                    results[index] = UNMOVABLE
                    continue
                items.append(item)
                indexes.append(index)
            for index, status in zip(indexes, self._run(mode, set_name, items, now)):
                results[index] = status
        return results

    # -- bulk --------------------------------------------------------------------------------------------------

    def retry_all(self, set_name: SetName, progress: Progress | None = None) -> int:
        _check_set(set_name, ("retry", "dead"))
        return self._all("retry", set_name, progress)

    def add_all_to_queue(self, progress: Progress | None = None) -> int:
        return self._all("enqueue", "schedule", progress)

    def kill_all(self, progress: Progress | None = None) -> int:
        return self._all("kill", "retry", progress)

    def _all(self, mode: str, set_name: str, progress: Progress | None) -> int:
        """Batched moves from the lowest score up; returns how many were moved.

        Bounded by the set's size at the start, so entries that arrive meanwhile (new failures) don't keep it going.
        Each batch is one script that reads, edits and moves its members inside Redis, so the scheduler poller or
        a second Retry All racing this one can't make a job move twice. Members it can't edit safely come back
        and are edited here, then moved by the generic script (which claims only members still present). Members
        that can't be moved (not a JSON object; queue key of another type) stay and are stepped over.
        """
        keys = self._keys(set_name)
        total = int(self.client.zcard(keys[0]))
        moved = looked_at = offset = 0
        while looked_at < total:
            now = time.time()
            count = min(self.batch_size, total - looked_at)
            args = [mode, self.prefix, offset, count, _float_text(now), str(int(now * 1000)),
                    _float_text(now - self.dead_timeout), str(-self.dead_max_jobs)]
            seen, done, left, for_python = self._move_all(keys=keys, args=args)
            if not seen:
                break
            looked_at += int(seen)
            moved += int(done)
            offset += int(left)
            items = []
            for member in for_python:
                item = self._item(mode, _as_bytes(member), "", now)
                if item is None:
                    offset += 1  # stays in the set, ahead of what's left
                else:
                    items.append(item)
            if items:
                statuses = [int(status) for status in self._move(keys=keys, args=self._args(mode, items, now, False)[0])]
                moved += statuses.count(MOVED)
                offset += statuses.count(WRONG_TYPE)
            if progress is not None:
                progress(moved, total)
        return moved

    # -- internals of moves --------------------------------------------------------------------------------------

    def _item(self, mode: str, member: bytes, score: str, now: float) -> tuple | None:
        """(queue, member, score, payload) for the move script; None when the member can't be pushed."""
        if mode in ("kill", "delete"):
            return ("", member, score, None)
        edited = edit_payload(member, mode == "retry", now)
        if edited is None:
            return None
        payload, queue = edited
        return (queue, member, score, payload)

    def _args(self, mode: str, items: list[tuple], now: float, with_scores: bool) -> tuple[list, list[int]]:
        """The script's ARGV (items grouped by queue) and, for each ARGV item in order, its index in ``items``."""
        push = mode in ("retry", "enqueue")
        args = [
            "push" if push else mode,
            self.prefix,
            _float_text(now),
            _float_text(now - self.dead_timeout),
            str(-self.dead_max_jobs),
            "1" if with_scores else "0",
        ]
        groups: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item[0], []).append(index)
        order = []
        for queue, indexes in groups.items():
            args += [queue, len(indexes)]
            for index in indexes:
                _, member, score, payload = items[index]
                args.append(member)
                if with_scores:
                    args.append(score)
                if push:
                    args.append(payload)
            order += indexes
        return args, order

    def _run(self, mode: str, set_name: str, items: list[tuple], now: float) -> list[int]:
        """Run the move script for selected entries (scores checked); statuses in ``items`` order."""
        if not items:
            return []
        args, order = self._args(mode, items, now, with_scores=True)
        return _reorder(self._move(keys=self._keys(set_name), args=args), order)

    def delete_all(self, set_name: SetName) -> int:
        """UNLINK the whole set; returns how many entries it had (ZCARD in the same script)."""
        _check_set(set_name, ("retry", "schedule", "dead"))
        return int(self._delete_all(keys=[self.key(set_name)]))

    # -- queues ------------------------------------------------------------------------------------------------

    def delete_queue(self, name: str) -> bool:
        """UNLINK queue:NAME and SREM queues NAME atomically; True when either existed."""
        return bool(self._delete_queue(keys=[self.key(f"queue:{name}"), self.key("queues")], args=[name]))

    def delete_queued_job(self, name: str, raw: bytes | str) -> int:
        """LREM queue:NAME 1 <exact payload>: 1 when removed, 0 when it was gone (e.g. a worker took it)."""
        return int(self.client.lrem(self.key(f"queue:{name}"), 1, raw))

    # -- processes ---------------------------------------------------------------------------------------------

    def signal(self, identity: str, action: Literal["quiet", "stop"]) -> bool:
        """LPUSH IDENTITY-signals TSTP|TERM + EXPIRE 60, only if IDENTITY is in ``processes`` and not embedded."""
        sig = _signal_name(action)
        (status,) = self._signal(keys=[self.key("processes")], args=[self.prefix, sig, "0", identity])
        return int(status) == 1

    def signal_all(self, action: Literal["quiet", "stop"]) -> int:
        """Signal every live (hash present), non-embedded process; returns how many were signalled."""
        sig = _signal_name(action)
        statuses = self._signal(keys=[self.key("processes")], args=[self.prefix, sig, "1"])
        return sum(1 for status in statuses if int(status) == 1)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _keys(self, set_name: str) -> list[str]:
        return [self.key(set_name), self.key("dead"), self.key("queues")]


def _check_set(set_name: str, allowed: tuple[str, ...]) -> None:
    if set_name not in allowed:
        raise ValueError(f"set must be one of {', '.join(allowed)}, not {set_name!r}")


def _signal_name(action: str) -> str:
    try:
        return SIGNALS[action]
    except KeyError:
        raise ValueError(f"action must be 'quiet' or 'stop', not {action!r}") from None


def _matching(members: list, jid: str) -> bytes | None:
    """The member whose decoded jid is exactly ``jid`` (Sidekiq's remove_job takes a lone neighbour unchecked)."""
    needle = jid.encode("utf-8", "surrogateescape")
    for member in members:
        member = _as_bytes(member)
        if needle not in member:
            continue
        try:
            job = json.loads(member)
        except ValueError:
            continue
        if isinstance(job, dict) and job.get("jid") == jid:
            return member
    return None


def _reorder(statuses: list, order: list[int]) -> list[int]:
    result = [NOT_FOUND] * len(order)
    for position, index in enumerate(order):
        result[index] = int(statuses[position])
    return result


def _count(statuses: list[int]) -> int:
    return sum(1 for status in statuses if status == MOVED)
