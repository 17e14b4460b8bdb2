"""`redis://[:password@]host:port/db` (or `rediss://`): state shared by many processes on many machines.

Every public method is one round trip and atomic: multi-step operations are single Lua scripts (or one
MULTI/EXEC), never check-then-set from Python. Times come from the caller (`now`), never from Redis, so
every back end behaves the same.

URL options: `?prefix=smsgw` (every key starts with `<prefix>:`, default `smsgw`; two gateways can share one
database), `?socket_timeout=2` (seconds per operation, enforced by us), and any other option redis-py
understands (`max_connections`, `socket_connect_timeout`, `ssl_cert_reqs`, ...). Defaults: 2 s to connect,
2 s per operation (waiting for a free connection included), a pool of 50 connections per process, and no
automatic retry (a write whose reply was lost is never sent twice; the caller gets StoreUnavailable and the
provider retries its webhook).

Errors: every Redis failure (down, restarting, loading, out of memory, read-only replica, timeout) is raised
as `StoreUnavailable`, including from `open()`: a process started while Redis is down fails clearly (or
retries) instead of half-starting. Once open, the client reconnects by itself when Redis comes back: the
first call to meet a lost connection closes the pool's idle ones too, so a restart costs one failed call, not
one per pooled connection.

Durability is Redis's: `open()` reads the server's `appendonly` and `appendfsync` and logs what an
acknowledgement guarantees (`store_durability`, see redis_durability). With `appendonly yes` and `appendfsync
always` a write is on disk when Redis answers it; with `everysec` on Redis >= 7.2, `wait_durable()` waits for it
(WAITAOF) before the gateway acknowledges. Standalone Redis or Sentinel; not Redis Cluster (scripts touch keys
they compute). Keys that would otherwise grow forever get a TTL: a processed message's claim, a delivery
status claim, an outbound record and a finished job are kept `RETENTION_SECONDS` (7 days); smsErrors waiting
for a user who never comes back are kept as long; a pipe is kept until 7 days after it expires; a
`claim_once` claim expires at its `until` (by Redis's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from sms_gateway.model import JSON, InboundMessage, Session
from sms_gateway.ratelimit import CEILING, DECREASE, DOUBLING_SECONDS, FLOOR, MAX_HOLD_SECONDS, Pace, SenderRate
from sms_gateway.store.base import (
    RETENTION_SECONDS,
    InboundRecord,
    Job,
    LeaseLost,
    OutboundRecord,
    Owner,
    OwnerState,
    Pipe,
    Store,
    StoreUnavailable,
    TurnStart,
    conversation_key,
    inbound_key,
)
from sms_gateway.store.redis_durability import Durability, RedisDurability, classify

T = TypeVar("T")

log = structlog.get_logger("sms_gateway.store.redis")

DEFAULT_PREFIX = "smsgw"
CONNECT_TIMEOUT = 2.0
OPERATION_TIMEOUT = 2.0
MAX_CONNECTIONS = 50


class RedisURL(NamedTuple):
    url: str  # for redis-py, without our own options
    prefix: str
    timeout: float | None  # per operation; None: the default


def redis_options(url: str) -> RedisURL:
    """Split our own options off a Redis URL: `prefix`, and `socket_timeout` (applied per operation by us)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a Redis URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in ("prefix", "socket_timeout")}
    prefix = ours.get("prefix", DEFAULT_PREFIX)
    if not prefix:
        raise ValueError(f"empty key prefix in {url!r}")
    timeout = None
    if "socket_timeout" in ours:
        try:
            timeout = float(ours["socket_timeout"])
        except ValueError:
            raise ValueError(f"invalid socket_timeout in {url!r}") from None
        if not timeout > 0:
            raise ValueError(f"socket_timeout must be positive in {url!r}")
    rest = urlencode([(name, value) for name, value in query if name not in ours])
    return RedisURL(urlunsplit(parts._replace(query=rest)), prefix, timeout)


def _pair(tenant_number: str, user_number: str) -> str:
    """An unambiguous field for (tenant, user) even when numbers contain ':' (`whatsapp:+1...`)."""
    return f"{len(tenant_number)}:{tenant_number}:{user_number}"


def _num(value: float) -> str:
    """A float as Redis should store it: repr round-trips exactly (Lua's own formatting keeps 14 digits)."""
    return repr(float(value))


def _slot_args(cap: SenderRate | None, now: float, max_wait: float) -> list[str | int | float]:
    """A send slot's arguments of the pace scripts' reserve(): cap rate or '', cap burst, now, max wait or ''."""
    return [
        "" if cap is None else _num(cap.per_second),
        0 if cap is None else int(cap.burst),
        _num(now),
        "" if max_wait == math.inf else _num(max_wait),
    ]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _job_args(job: Job) -> list[str | int | float]:
    """A job as the 10 arguments of the scripts' enqueue()."""
    return [
        job.job_id,
        job.kind,
        _dumps(job.payload),
        job.order_key or "",
        _num(job.run_at),
        int(job.attempts),
        job.last_error or "",
        "1" if job.order_key is not None else "0",
        "1" if job.last_error is not None else "0",
        "" if job.begun_attempt is None else int(job.begun_attempt),
    ]


def _outbound_data(record: OutboundRecord) -> str:
    return _dumps(
        {
            "tenant": record.tenant_number,
            "user": record.user_number,
            "session": record.session_id,
            "provider": record.provider_message_id,
            "pipe": record.pipe,
            "first": record.first_attempt_at,
        }
    )


# Lua ----------------------------------------------------------------------------------------------------
# Numbers travel as strings computed in Python (exact); Lua only compares them (tonumber is strtod).
# ARGV[1] is always the key prefix including its colon.

# Inbound. A message hash holds seq, conv, payload, attempts, owner, lease_until, done. Each conversation has a
# zset of its unfinished messages by seq: only its head may be leased. Heads sit in `ready` (free, by seq) or
# `leased` (by lease end); `pending` is the set of unfinished keys.
_INBOUND_COMMON = """
local P = ARGV[1]
local READY, LEASED, PENDING = P .. 'in:ready', P .. 'in:leased', P .. 'in:pending'
local function mk(key) return P .. 'in:msg:' .. key end
local function ck(conv) return P .. 'in:conv:' .. conv end
local function activate(key)
  if redis.call('ZSCORE', READY, key) then return end
  local h = redis.call('HMGET', mk(key), 'seq', 'owner', 'lease_until')
  if not h[1] then return end
  if h[2] then redis.call('ZADD', LEASED, h[3], key) else redis.call('ZADD', READY, h[1], key) end
end
"""

_ACCEPT_INBOUND = (
    _INBOUND_COMMON
    + """
-- ARGV: prefix, inbound key, conversation key, payload
local key, conv = ARGV[2], ARGV[3]
if redis.call('EXISTS', mk(key)) == 1 then return 0 end
local seq = redis.call('INCR', P .. 'in:seq')
redis.call('HSET', mk(key), 'seq', seq, 'conv', conv, 'payload', ARGV[4], 'attempts', 0)
redis.call('ZADD', ck(conv), seq, key)
redis.call('SADD', PENDING, key)
if redis.call('ZRANGE', ck(conv), 0, 0)[1] == key then activate(key) end
return 1
"""
)

_LEASE_INBOUND = (
    _INBOUND_COMMON
    + """
-- ARGV: prefix, now, limit, owner, lease end
local now_s, limit, owner, lease_until = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = tonumber(now_s)
for _, key in ipairs(redis.call('ZRANGEBYSCORE', LEASED, '-inf', now_s)) do
  redis.call('ZREM', LEASED, key)
  local seq = redis.call('HGET', mk(key), 'seq')
  if seq then redis.call('ZADD', READY, seq, key) end
end
local out = {}
local n = 0
while n < limit do
  local batch = redis.call('ZRANGE', READY, 0, limit - n - 1)
  if #batch == 0 then break end
  for _, key in ipairs(batch) do
    redis.call('ZREM', READY, key)
    local h = redis.call('HMGET', mk(key), 'conv', 'owner', 'lease_until', 'done')
    if not h[1] or h[4] then
      -- gone or finished: nothing to do
    elseif redis.call('ZRANGE', ck(h[1]), 0, 0)[1] ~= key then
      -- not the head of its conversation: activated again when it is
    elseif h[2] and tonumber(h[3]) > now then
      redis.call('ZADD', LEASED, h[3], key)  -- still leased (a caller whose clock is behind)
    else
      redis.call('HSET', mk(key), 'owner', owner, 'lease_until', lease_until)
      local attempts = redis.call('HINCRBY', mk(key), 'attempts', 1)
      redis.call('ZADD', LEASED, lease_until, key)
      n = n + 1
      out[#out + 1] = key
      out[#out + 1] = redis.call('HGET', mk(key), 'payload')
      out[#out + 1] = attempts
    end
  end
end
return out
"""
)

_COMPLETE_INBOUND_FN = """
local function complete_inbound(key, retention)
  local h = redis.call('HMGET', mk(key), 'conv', 'done')
  if not h[1] or h[2] then return 0 end
  redis.call('ZREM', READY, key)
  redis.call('ZREM', LEASED, key)
  redis.call('SREM', PENDING, key)
  redis.call('ZREM', ck(h[1]), key)
  local head = redis.call('ZRANGE', ck(h[1]), 0, 0)[1]
  if head then activate(head) end
  redis.call('HSET', mk(key), 'done', 1)
  redis.call('HDEL', mk(key), 'payload', 'owner', 'lease_until')
  redis.call('EXPIRE', mk(key), retention)
  return 1
end
"""

_COMPLETE_INBOUND = (
    _INBOUND_COMMON
    + _COMPLETE_INBOUND_FN
    + """
-- ARGV: prefix, inbound key, retention seconds
return complete_inbound(ARGV[2], ARGV[3])
"""
)

_EXTEND_INBOUND = (
    _INBOUND_COMMON
    + """
-- ARGV: prefix, owner, lease end, keys...
local owner, lease_end = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local key = ARGV[i]
  local h = redis.call('HMGET', mk(key), 'owner', 'done')
  if h[1] == owner and not h[2] then
    redis.call('HSET', mk(key), 'lease_until', lease_end)
    if not redis.call('ZSCORE', READY, key) then redis.call('ZADD', LEASED, lease_end, key) end
  end
end
return 1
"""
)

# A session's scripts take KEYS: session hash, ids hash (session id -> pair), expiry zset.
_SESSION_SAVE = """
local function save(pair, id, expires_at, data)
  local old = redis.call('HGET', KEYS[1], 'id')
  if old and old ~= id and redis.call('HGET', KEYS[2], old) == pair then
    redis.call('HDEL', KEYS[2], old)
  end
  redis.call('HSET', KEYS[1], 'id', id, 'data', data)
  redis.call('HSET', KEYS[2], id, pair)
  redis.call('ZADD', KEYS[3], expires_at, pair)
end
"""

_SAVE_SESSION = (
    _SESSION_SAVE
    + """
-- ARGV: prefix, pair, session id, expires at, data
save(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"""
)

_INSERT_SESSION = (
    _SESSION_SAVE
    + """
-- ARGV: prefix, pair, session id, expires at, data
local existing = redis.call('HGET', KEYS[1], 'data')
if existing then return existing end
save(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return false
"""
)

_SESSION_DELETE = """
-- only if it is still session `id`
local function delete_session(pair, id)
  if redis.call('HGET', KEYS[1], 'id') ~= id then return 0 end
  redis.call('DEL', KEYS[1])
  if redis.call('HGET', KEYS[2], id) == pair then redis.call('HDEL', KEYS[2], id) end
  redis.call('ZREM', KEYS[3], pair)
  return 1
end
"""

_DELETE_SESSION = (
    _SESSION_DELETE
    + """
-- ARGV: prefix, pair, session id
return delete_session(ARGV[2], ARGV[3])
"""
)

_FIND_SESSION = """
-- KEYS: ids hash; ARGV: prefix, session id
local pair = redis.call('HGET', KEYS[1], ARGV[2])
if not pair then return false end
local h = redis.call('HMGET', ARGV[1] .. 'sess:pair:' .. pair, 'id', 'data')
if h[1] ~= ARGV[2] then return false end
return h[2]
"""

_EXPIRED_SESSIONS = """
-- KEYS: expiry zset; ARGV: prefix, now, limit
local out = {}
for _, pair in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local data = redis.call('HGET', ARGV[1] .. 'sess:pair:' .. pair, 'data')
  if data then out[#out + 1] = data end
end
return out
"""

_SAVE_PIPE = """
-- KEYS: pipe hash, pair -> id string; ARGV: prefix, pipe id, pair, expires at, data, ttl seconds
local P, id, pair = ARGV[1], ARGV[2], ARGV[3]
local old_pair = redis.call('HGET', KEYS[1], 'pair')
if old_pair and old_pair ~= pair and redis.call('GET', P .. 'pipe:pair:' .. old_pair) == id then
  redis.call('DEL', P .. 'pipe:pair:' .. old_pair)
end
local old_id = redis.call('GET', KEYS[2])
if old_id and old_id ~= id then redis.call('DEL', P .. 'pipe:id:' .. old_id) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'pair', pair, 'expires_at', ARGV[4], 'data', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SET', KEYS[2], id, 'EX', ARGV[6])
return 1
"""

_LIVE_PIPE = """
local function live_pipe(pair_key, now)
  local id = redis.call('GET', pair_key)
  if not id then return false end
  local h = redis.call('HMGET', ARGV[1] .. 'pipe:id:' .. id, 'expires_at', 'data')
  if not h[1] or tonumber(h[1]) <= tonumber(now) then return false end
  return h[2]
end
"""

_PIPE_FOR = (
    _LIVE_PIPE
    + """
-- KEYS: pair -> id string; ARGV: prefix, now
return live_pipe(KEYS[1], ARGV[2])
"""
)

_BEGIN_TURN = (
    _LIVE_PIPE
    + """
-- KEYS: pipe pair -> id string, session hash, smsError list; ARGV: prefix, now
-- {pipe data, false, {}} during a call, else {false, session data or false, the smsErrors taken}
local pipe = live_pipe(KEYS[1], ARGV[2])
if pipe then return {pipe, false, {}} end
local errors = redis.call('LRANGE', KEYS[3], 0, -1)
if #errors > 0 then redis.call('DEL', KEYS[3]) end
return {false, redis.call('HGET', KEYS[2], 'data'), errors}
"""
)

_DELETE_PIPE = """
-- KEYS: pipe hash; ARGV: prefix, pipe id
local pair = redis.call('HGET', KEYS[1], 'pair')
if not pair then return 0 end
redis.call('DEL', KEYS[1])
local pair_key = ARGV[1] .. 'pipe:pair:' .. pair
if redis.call('GET', pair_key) == ARGV[2] then redis.call('DEL', pair_key) end
return 1
"""

# Jobs. A job hash holds its fields plus state (queued | leased | done | dead) and seq. Each order key has a
# zset of its active (queued or leased) jobs by seq: only its head may run. Candidates (unkeyed active jobs
# and heads) sit in one of: `waiting` (queued, by run_at), `ready` (due, by seq), `leased` (by lease end).
# The candidate sets are hints checked when leasing, so a job that stopped being a head is simply dropped
# and put back when it is the head again (`promote`).
_JOBS_COMMON = """
local P = ARGV[1]
local WAITING, READY, LEASED, DEAD = P .. 'jobs:waiting', P .. 'jobs:ready', P .. 'jobs:leased', P .. 'jobs:dead'
local ACTIVE, SEQ = P .. 'jobs:active', P .. 'jobs:seq'
local function jk(id) return P .. 'jobs:id:' .. id end
local function ok(key) return P .. 'jobs:order:' .. key end
local function activate(id)
  if redis.call('ZSCORE', READY, id) then return end
  local h = redis.call('HMGET', jk(id), 'state', 'run_at', 'lease_until')
  if h[1] == 'queued' then redis.call('ZADD', WAITING, h[2], id)
  elseif h[1] == 'leased' then redis.call('ZADD', LEASED, h[3], id) end
end
local function promote(key)
  local head = redis.call('ZRANGE', ok(key), 0, 0)[1]
  if head then activate(head) end
end
local function unindex(id)
  redis.call('ZREM', WAITING, id)
  redis.call('ZREM', READY, id)
  redis.call('ZREM', LEASED, id)
end
-- an active job leaves its order (done or dead): the next one of its key may run
local function deactivate(id, key)
  unindex(id)
  redis.call('SREM', ACTIVE, id)
  if key then
    redis.call('ZREM', ok(key), id)
    promote(key)
  end
end
-- a job becomes active with its (new or old) seq
local function reactivate(id, key, seq)
  redis.call('SADD', ACTIVE, id)
  if key then
    redis.call('ZADD', ok(key), seq, id)
    promote(key)
  else
    activate(id)
  end
end
local function fields(id)
  local h = redis.call('HMGET', jk(id), 'kind', 'payload', 'order_key', 'run_at', 'attempts', 'last_error', 'begun')
  return {id, h[1], h[2], h[3], h[4], tonumber(h[5]), h[6], h[7]}
end
"""

# held(): whether the job is still leased by `owner` in attempt `attempts` (a lease, Job.owner and Job.attempts).
# begin_job(): if it is, its current attempt has begun (Job.begun_attempt), if the job says so at all; 1 if held.
_BEGIN_JOB_FN = """
local function held(key, owner, attempts)
  local h = redis.call('HMGET', key, 'state', 'owner', 'attempts')
  return h[1] == 'leased' and h[2] == owner and tonumber(h[3]) == tonumber(attempts)
end
local function begin_job(key, owner, attempts)
  if not held(key, owner, attempts) then return 0 end
  local h = redis.call('HMGET', key, 'attempts', 'begun')
  if h[2] then redis.call('HSET', key, 'begun', h[1]) end
  return 1
end
"""

# enqueue(): a job's 10 arguments from ARGV, starting at `at`: id, kind, payload, order key or '', run_at, attempts,
# last error or '', has key, has error, begun attempt or '' (`_job_args`). 1 if it was new.
_ENQUEUE = """
local function enqueue(at)
  local id = ARGV[at]
  if redis.call('EXISTS', jk(id)) == 1 then return 0 end
  local seq = redis.call('INCR', SEQ)
  redis.call('HSET', jk(id), 'kind', ARGV[at + 1], 'payload', ARGV[at + 2], 'run_at', ARGV[at + 4],
    'attempts', ARGV[at + 5], 'state', 'queued', 'seq', seq)
  local key = false
  if ARGV[at + 7] == '1' then key = ARGV[at + 3]; redis.call('HSET', jk(id), 'order_key', key) end
  if ARGV[at + 8] == '1' then redis.call('HSET', jk(id), 'last_error', ARGV[at + 6]) end
  if ARGV[at + 9] ~= '' then redis.call('HSET', jk(id), 'begun', ARGV[at + 9]) end
  reactivate(id, key, seq)
  return 1
end
"""

_ENQUEUE_JOB = (
    _JOBS_COMMON
    + _ENQUEUE
    + """
-- ARGV: prefix, the job's 10 arguments
return enqueue(2)
"""
)

# A turn's end in one step (Store.end_turn): its replies queued, its session saved or deleted, its message done.
# The inbound fragment comes first: the jobs fragment redefines READY, LEASED and activate for what follows it,
# while complete_inbound keeps the inbound ones it was defined with (Lua scoping is lexical).
_END_TURN = (
    _INBOUND_COMMON
    + _COMPLETE_INBOUND_FN
    + _SESSION_SAVE
    + _SESSION_DELETE
    + _JOBS_COMMON
    + _ENQUEUE
    + """
-- KEYS: session hash, ids hash, expiry zset
-- ARGV: prefix, retention seconds, inbound key or '', 'save' or 'delete', pair, session id, expires at, data,
--       then 10 arguments per job
local queued = 0
for at = 9, #ARGV, 10 do queued = queued + enqueue(at) end
if ARGV[4] == 'delete' then delete_session(ARGV[5], ARGV[6]) else save(ARGV[5], ARGV[6], ARGV[7], ARGV[8]) end
if ARGV[3] ~= '' then complete_inbound(ARGV[3], ARGV[2]) end
return queued
"""
)

_LEASE_JOBS = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, now, limit, owner, lease end
local now_s, limit, owner, lease_until = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = tonumber(now_s)
local function to_ready(set)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now_s)) do
    redis.call('ZREM', set, id)
    local seq = redis.call('HGET', jk(id), 'seq')
    if seq then redis.call('ZADD', READY, seq, id) end
  end
end
to_ready(LEASED)
to_ready(WAITING)
local out = {}
local n = 0
while n < limit do
  local batch = redis.call('ZRANGE', READY, 0, limit - n - 1)
  if #batch == 0 then break end
  for _, id in ipairs(batch) do
    redis.call('ZREM', READY, id)
    local h = redis.call('HMGET', jk(id), 'state', 'run_at', 'lease_until', 'order_key')
    local state = h[1]
    if state == 'queued' or state == 'leased' then
      if h[4] and redis.call('ZRANGE', ok(h[4]), 0, 0)[1] ~= id then
        -- not the head of its order key (any more): promote() puts it back when it is
      elseif tonumber(h[2]) > now then
        redis.call('ZADD', WAITING, h[2], id)
      elseif state == 'leased' and tonumber(h[3]) > now then
        redis.call('ZADD', LEASED, h[3], id)
      else
        redis.call('HSET', jk(id), 'state', 'leased', 'owner', owner, 'lease_until', lease_until)
        redis.call('HINCRBY', jk(id), 'attempts', 1)
        redis.call('ZADD', LEASED, lease_until, id)
        n = n + 1
        for _, v in ipairs(fields(id)) do out[#out + 1] = v end
      end
    end
  end
end
return out
"""
)

_EXTEND_JOBS = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, owner, lease end, ids...
local owner, lease_end = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local id = ARGV[i]
  local h = redis.call('HMGET', jk(id), 'state', 'owner')
  if h[1] == 'leased' and h[2] == owner then
    redis.call('HSET', jk(id), 'lease_until', lease_end)
    if redis.call('ZSCORE', LEASED, id) then redis.call('ZADD', LEASED, lease_end, id) end
  end
end
return 1
"""
)

_COMPLETE = """
local function complete(id, retention)
  local h = redis.call('HMGET', jk(id), 'state', 'order_key')
  if not h[1] or h[1] == 'done' then return 0 end
  if h[1] == 'dead' then redis.call('ZREM', DEAD, id) else deactivate(id, h[2]) end
  redis.call('HSET', jk(id), 'state', 'done')
  redis.call('HDEL', jk(id), 'owner')
  redis.call('EXPIRE', jk(id), retention)
  return 1
end
"""

_COMPLETE_JOB = (
    _JOBS_COMMON
    + _COMPLETE
    + """
-- ARGV: prefix, id, retention seconds
return complete(ARGV[2], ARGV[3])
"""
)

_COMPLETE_SEND = (
    _JOBS_COMMON
    + _COMPLETE
    + """
-- ARGV: prefix, id, retention seconds, outbound record key, its data
redis.call('SET', ARGV[4], ARGV[5], 'EX', ARGV[3])
return complete(ARGV[2], ARGV[3])
"""
)

_RETRY_JOB = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, id, run_at, error
local id = ARGV[2]
local h = redis.call('HMGET', jk(id), 'state', 'order_key', 'seq')
if not h[1] then return 0 end
redis.call('HSET', jk(id), 'state', 'queued', 'run_at', ARGV[3], 'last_error', ARGV[4])
redis.call('HDEL', jk(id), 'owner')
if h[1] == 'queued' or h[1] == 'leased' then
  unindex(id)
  if h[2] then promote(h[2]) else activate(id) end
else
  -- done or dead: active again, in its original place (as the other back ends do)
  redis.call('ZREM', DEAD, id)
  redis.call('PERSIST', jk(id))
  reactivate(id, h[2], h[3])
end
return 1
"""
)

_DEFER_JOB = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, id, run_at
local id = ARGV[2]
local h = redis.call('HMGET', jk(id), 'state', 'order_key', 'attempts', 'begun')
if h[1] ~= 'leased' then return 0 end
local attempts = (tonumber(h[3]) or 1) - 1
if attempts < 0 then attempts = 0 end
redis.call('HSET', jk(id), 'state', 'queued', 'run_at', ARGV[3], 'attempts', attempts)
if h[4] and tonumber(h[4]) > attempts then redis.call('HSET', jk(id), 'begun', attempts) end
redis.call('HDEL', jk(id), 'owner')
unindex(id)
if h[2] then promote(h[2]) else activate(id) end
return 1
"""
)

_DEAD_LETTER_JOB = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, id, error, now
local id = ARGV[2]
local h = redis.call('HMGET', jk(id), 'state', 'order_key', 'seq')
if not h[1] then return 0 end
if h[1] == 'queued' or h[1] == 'leased' then deactivate(id, h[2]) end
redis.call('HSET', jk(id), 'state', 'dead', 'last_error', ARGV[3], 'run_at', ARGV[4])
redis.call('HDEL', jk(id), 'owner')
redis.call('PERSIST', jk(id))
redis.call('ZADD', DEAD, h[3], id)
return 1
"""
)

_DEAD_LETTERS = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, limit
local out = {}
for _, id in ipairs(redis.call('ZRANGE', DEAD, 0, tonumber(ARGV[2]) - 1)) do
  for _, v in ipairs(fields(id)) do out[#out + 1] = v end
end
return out
"""
)

_REPLAY_DEAD_LETTER = (
    _JOBS_COMMON
    + """
-- ARGV: prefix, id, now
local id = ARGV[2]
local h = redis.call('HMGET', jk(id), 'state', 'order_key')
if h[1] ~= 'dead' then return 0 end
redis.call('ZREM', DEAD, id)
local seq = redis.call('INCR', SEQ)
redis.call('HSET', jk(id), 'state', 'queued', 'seq', seq, 'attempts', 0, 'run_at', ARGV[3])
if redis.call('HEXISTS', jk(id), 'begun') == 1 then redis.call('HSET', jk(id), 'begun', 0) end
reactivate(id, h[2], seq)
return 1
"""
)

# ratelimit.py's Pace, slowed() and reserve(), same double arithmetic in the same order; %.17g round-trips a
# double exactly. A pace is one string, "rate cut_at hold_until", that expires when it limits nothing any more.
_PACE = (
    f"""
local DOUBLING, CEILING, DECREASE, FLOOR, MAX_HOLD = {DOUBLING_SECONDS!r}, {CEILING!r}, {DECREASE!r}, {FLOOR!r},
  {MAX_HOLD_SECONDS!r}
"""
    + """
local function fmt(x) return string.format('%.17g', x) end
local function read_pace(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local r, c, h = string.match(v, '^(%S+) (%S+) (%S+)$')
  return {tonumber(r), tonumber(c), tonumber(h)}
end
local function since(p) if p[2] > p[3] then return p[2] end return p[3] end
local function rate_at(p, now)
  local s = since(p)
  if now <= s then return p[1] end
  return p[1] * 2.0 ^ math.min((now - s) / DOUBLING, 64.0)
end
local function live(p, now) return now < since(p) or rate_at(p, now) < CEILING end
local function reserve(slot_key, pace_key, cap_rate, cap_burst, now, max_wait)
  local per_second, burst, start = math.huge, 1, now
  if cap_rate ~= '' then per_second, burst = tonumber(cap_rate), tonumber(cap_burst) end
  local p = read_pace(pace_key)
  if p and live(p, now) then
    local r = rate_at(p, now)
    if r < per_second then per_second, burst = r, 1 end
    if p[3] > now then start = p[3] end
  end
  if per_second == math.huge then return '0' end
  local interval = 1.0 / per_second
  local base = start
  local tat = tonumber(redis.call('GET', slot_key) or '')
  if tat ~= nil and tat > start then base = tat end
  local allowed = base - interval * math.max(burst - 1, 0)
  if allowed < start then allowed = start end
  local wait = allowed - now
  if max_wait ~= '' and wait > tonumber(max_wait) then return fmt(wait) end
  local new_tat = base + interval
  -- idle for longer than this, the bucket is full again: no need to keep the key
  local ttl = math.ceil((new_tat - now) * 1000) + 60000
  redis.call('SET', slot_key, fmt(new_tat), 'PX', string.format('%d', ttl))
  return fmt(wait)
end
"""
)

_RESERVE_SEND_SLOT = (
    _PACE
    + """
-- KEYS: slot key, pace key; ARGV: prefix, cap rate or '', cap burst, now, max wait or ''
return reserve(KEYS[1], KEYS[2], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
"""
)

_BEGIN_SEND = (
    _PACE
    + _BEGIN_JOB_FN
    + """
-- KEYS: slot key, pace key, outbound record key
-- ARGV: prefix, cap rate or '', cap burst, now, max wait or '', record data, retention seconds, job id or '',
-- its owner, its attempts -> the wait, or nil (and nothing written) if the job is no longer leased so
local job_key = ARGV[1] .. 'jobs:id:' .. ARGV[8]
if ARGV[8] ~= '' and not held(job_key, ARGV[9], ARGV[10]) then return nil end
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
local wait = reserve(KEYS[1], KEYS[2], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
if ARGV[8] ~= '' and tonumber(wait) <= 0 then begin_job(job_key, ARGV[9], ARGV[10]) end
return wait
"""
)

_BEGIN_JOB = (
    _BEGIN_JOB_FN
    + """
-- ARGV: prefix, id, owner, attempts -> 1, or 0 if the job is no longer leased so
return begin_job(ARGV[1] .. 'jobs:id:' .. ARGV[2], ARGV[3], ARGV[4])
"""
)

_SLOW_SENDER = (
    _PACE
    + """
-- KEYS: pace key; ARGV: prefix, now, paced_at, retry_after or '', start rate
local now, paced_at, start_rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local p = read_pace(KEYS[1])
if p and live(p, now) then
  if paced_at < p[2] then return {fmt(p[1]), fmt(p[2]), fmt(p[3])} end
  start_rate = rate_at(p, now)
end
local hold = now + math.min(math.max(tonumber(ARGV[4]) or 0.0, 0.0), MAX_HOLD)
local rate, cut_at = math.max(FLOOR, start_rate * DECREASE), now
local s = cut_at
if hold > s then s = hold end
local grow = 0
if rate < CEILING then grow = DOUBLING * math.log(CEILING / rate) / math.log(2) end
local ttl = math.ceil((s + grow - now) * 1000) + 1000
redis.call('SET', KEYS[1], fmt(rate) .. ' ' .. fmt(cut_at) .. ' ' .. fmt(hold), 'PX', string.format('%d', ttl))
return {fmt(rate), fmt(cut_at), fmt(hold)}
"""
)

# Lease owners. `owners` maps each registered owner's id to its JSON; its heartbeat is a key of its own,
# `owner:alive:<id>`, that Redis expires (by its own clock, the same for every host).
_BEAT_OWNER = """
-- KEYS: alive key, owners hash; ARGV: prefix, owner id, owner JSON, ttl ms
local was = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return was
"""

_OWNERS = """
-- KEYS: owners hash; ARGV: prefix -> owner JSON, 1 if alive else 0, ...
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  out[#out + 1] = all[i + 1]
  out[#out + 1] = redis.call('EXISTS', ARGV[1] .. 'owner:alive:' .. all[i])
end
return out
"""

_RELEASE_OWNERS = """
-- ARGV: prefix, when their jobs are free, owner ids... -> the ids released
local P = ARGV[1]
local jobs_free_s = ARGV[2]
local OWNERS = P .. 'owners'
local gone, released = {}, {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', OWNERS, id) == 1 and redis.call('EXISTS', P .. 'owner:alive:' .. id) == 0 then
    redis.call('HDEL', OWNERS, id)
    gone[id] = true
    released[#released + 1] = id
  end
end
if #released == 0 then return released end
-- A lease that ends at 0 is taken by the next lease call.
local IN_LEASED, JOBS_LEASED = P .. 'in:leased', P .. 'jobs:leased'
for _, key in ipairs(redis.call('ZRANGE', IN_LEASED, 0, -1)) do
  local owner = redis.call('HGET', P .. 'in:msg:' .. key, 'owner')
  if owner and gone[owner] then
    redis.call('HSET', P .. 'in:msg:' .. key, 'lease_until', '0')
    redis.call('ZADD', IN_LEASED, 0, key)
  end
end
-- A job whose current attempt had not begun (Job.begun) is free at once; one whose attempt had, once it settled.
for _, id in ipairs(redis.call('ZRANGE', JOBS_LEASED, 0, -1)) do
  local h = redis.call('HMGET', P .. 'jobs:id:' .. id, 'state', 'owner', 'lease_until', 'attempts', 'begun')
  if h[1] == 'leased' and h[2] and gone[h[2]] then
    local free_s = jobs_free_s
    if h[5] and tonumber(h[5]) < tonumber(h[4]) then free_s = '0' end
    if tonumber(h[3]) > tonumber(free_s) then
      redis.call('HSET', P .. 'jobs:id:' .. id, 'lease_until', free_s)
      redis.call('ZADD', JOBS_LEASED, free_s, id)
    end
  end
end
return released
"""

_JOB_FIELDS = 8


class RedisStore(Store):
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        operation_timeout: float = OPERATION_TIMEOUT,
        retention_seconds: int = RETENTION_SECONDS,
    ) -> None:
        options = redis_options(url)
        self._url = options.url
        self._p = options.prefix + ":"
        self._connect_timeout = connect_timeout
        self._operation_timeout = options.timeout or operation_timeout
        self._retention = int(retention_seconds)
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._durability: RedisDurability | None = None
        # WAITAOF's own timeout ends before ours, so a slow fsync is an answer (0 fsyncs), not a lost connection.
        self._waitaof_ms = max(int(self._operation_timeout * 750), 1)

    @property
    def prefix(self) -> str:
        return self._p[:-1]

    # Plumbing ---------------------------------------------------------------------------------
    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable("store is not open")
        return self._client

    async def _call(self, awaitable: Awaitable[T]) -> T:
        # The operation timeout is ours (asyncio.timeout), not redis-py's socket_timeout: on Python 3.11 the
        # latter runs sends under asyncio.wait_for, which can swallow a cancellation (a worker that never stops).
        # A timed-out or cancelled command disconnects its connection, so no late reply is read by the next one.
        try:
            async with asyncio.timeout(self._operation_timeout):
                return await awaitable
        except TimeoutError as exc:
            raise StoreUnavailable(f"redis: no answer within {self._operation_timeout:g} s") from exc
        except RedisConnectionError as exc:
            await self._drop_idle_connections()
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # a socket error redis-py did not wrap
            await self._drop_idle_connections()
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _drop_idle_connections(self) -> None:
        """A lost connection most often means Redis restarted: the pool's idle connections are dead too, and
        each would fail its next operation (one 503 per pooled connection). Closed now, they reconnect on use."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect(inuse_connections=False)

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        client = self._redis  # StoreUnavailable when not open
        return await self._call(self._scripts[name](keys=list(keys), args=[self._p, *args], client=client))

    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    async def open(self) -> None:
        if self._client is not None:
            return
        # A bounded pool that makes a burst wait for a connection (within the operation timeout) instead of
        # failing with "too many connections"; `?max_connections=` changes its size.
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,  # the wait is bounded by the operation timeout, see _call
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=None,  # see _call
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        client = Redis.from_pool(pool)
        self._client = client
        try:
            await self._call(client.ping())
        except StoreUnavailable as exc:
            self._client = None
            await client.aclose()
            raise StoreUnavailable(f"cannot connect: {exc}") from exc
        sources = {
            "accept_inbound": _ACCEPT_INBOUND,
            "lease_inbound": _LEASE_INBOUND,
            "complete_inbound": _COMPLETE_INBOUND,
            "extend_inbound": _EXTEND_INBOUND,
            "extend_jobs": _EXTEND_JOBS,
            "save_session": _SAVE_SESSION,
            "insert_session": _INSERT_SESSION,
            "delete_session": _DELETE_SESSION,
            "find_session": _FIND_SESSION,
            "expired_sessions": _EXPIRED_SESSIONS,
            "save_pipe": _SAVE_PIPE,
            "pipe_for": _PIPE_FOR,
            "begin_turn": _BEGIN_TURN,
            "end_turn": _END_TURN,
            "begin_send": _BEGIN_SEND,
            "complete_send": _COMPLETE_SEND,
            "delete_pipe": _DELETE_PIPE,
            "enqueue_job": _ENQUEUE_JOB,
            "lease_jobs": _LEASE_JOBS,
            "complete_job": _COMPLETE_JOB,
            "retry_job": _RETRY_JOB,
            "dead_letter_job": _DEAD_LETTER_JOB,
            "dead_letters": _DEAD_LETTERS,
            "replay_dead_letter": _REPLAY_DEAD_LETTER,
            "reserve_send_slot": _RESERVE_SEND_SLOT,
            "beat_owner": _BEAT_OWNER,
            "owners": _OWNERS,
            "release_owners": _RELEASE_OWNERS,
            "slow_sender": _SLOW_SENDER,
            "defer_job": _DEFER_JOB,
            "begin_job": _BEGIN_JOB,
        }
        self._scripts = {name: client.register_script(source) for name, source in sources.items()}
        self._durability = await self._read_durability()

    async def _read_durability(self) -> RedisDurability:
        """What an acknowledgement guarantees on this server (see redis_durability), logged once."""
        try:
            config = await self._call(self._redis.config_get("append*"))
        except StoreUnavailable:
            config = {}  # CONFIG is often disabled or renamed on managed Redis
        try:
            version = (await self._call(self._redis.info("server"))).get("redis_version")
        except StoreUnavailable:
            version = None
        durability = classify(
            config.get("appendonly"), config.get("appendfsync"), None if version is None else str(version)
        )
        report = log.info if durability.durable else log.warning
        report(
            "store_durability",
            mode=str(durability.mode),
            appendonly=durability.appendonly,
            appendfsync=durability.appendfsync,
            redis_version=durability.version,
            guarantee=durability.guarantee,
        )
        return durability

    @property
    def durability(self) -> RedisDurability | None:
        """The server's durability as read at `open()` (None before)."""
        return self._durability

    async def wait_durable(self) -> None:
        if self._durability is None or self._durability.mode is not Durability.WAITAOF:
            return
        # WAITAOF confirms the writes of its own connection: one more write on the connection it runs on comes
        # after every write already answered (whichever connection made it) in the one append-only file, so once
        # it is on disk, so are they. A pipeline, not MULTI: WAITAOF does not block inside a transaction.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._k("durable"), "1", ex=3600)
        pipe.waitaof(1, 0, self._waitaof_ms)
        _, (local, _replicas) = await self._call(pipe.execute())
        if int(local) < 1:
            raise StoreUnavailable(f"redis: the write was not confirmed on disk (WAITAOF) within {self._waitaof_ms} ms")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    # Inbound ----------------------------------------------------------------------------------
    async def accept_inbound(self, message: InboundMessage) -> bool:
        key = inbound_key(message)
        result = await self._script(
            "accept_inbound", [self._k("in", "msg", key)], [key, conversation_key(message), _dumps(message.to_json())]
        )
        return bool(result)

    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        if limit <= 0:
            return []
        flat = cast(
            list[Any],
            await self._script("lease_inbound", [], [_num(now), limit, owner, _num(now + lease_seconds)]),
        )
        return [
            InboundRecord(str(flat[i]), InboundMessage.from_json(json.loads(flat[i + 1])), int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def extend_inbound_leases(self, owner: str, keys: Sequence[str], until: float) -> None:
        if keys:
            await self._script("extend_inbound", [], [owner, _num(until), *keys])

    async def complete_inbound(self, key: str) -> None:
        await self._script("complete_inbound", [self._k("in", "msg", key)], [key, self._retention])

    async def pending_inbound_count(self) -> int:
        return int(await self._call(self._redis.scard(self._k("in", "pending"))))

    # Sessions ---------------------------------------------------------------------------------
    def _session_keys(self, tenant_number: str, user_number: str) -> list[str]:
        return [
            self._k("sess", "pair", _pair(tenant_number, user_number)),
            self._k("sess", "ids"),
            self._k("sess", "expiry"),
        ]

    async def load_session(self, tenant_number: str, user_number: str) -> Session | None:
        key = self._k("sess", "pair", _pair(tenant_number, user_number))
        data = await self._call(cast(Awaitable[str | None], self._redis.hget(key, "data")))
        return None if data is None else Session.from_json(json.loads(data))

    def _session_args(self, session: Session) -> list[str | int | float]:
        return [
            _pair(session.tenant_number, session.user_number),
            session.session_id,
            _num(session.expires_at()),
            _dumps(session.to_json()),
        ]

    async def save_session(self, session: Session) -> None:
        await self._script(
            "save_session",
            self._session_keys(session.tenant_number, session.user_number),
            self._session_args(session),
        )

    async def insert_session(self, session: Session) -> Session | None:
        existing = await self._script(
            "insert_session",
            self._session_keys(session.tenant_number, session.user_number),
            self._session_args(session),
        )
        return None if existing is None else Session.from_json(json.loads(existing))

    async def delete_session(self, tenant_number: str, user_number: str, session_id: str) -> bool:
        result = await self._script(
            "delete_session",
            self._session_keys(tenant_number, user_number),
            [_pair(tenant_number, user_number), session_id],
        )
        return bool(result)

    async def find_session(self, session_id: str) -> Session | None:
        data = await self._script("find_session", [self._k("sess", "ids")], [session_id])
        return None if data is None else Session.from_json(json.loads(data))

    async def expired_sessions(self, now: float, limit: int) -> list[Session]:
        if limit <= 0:
            return []
        rows = cast(list[str], await self._script("expired_sessions", [self._k("sess", "expiry")], [_num(now), limit]))
        return [Session.from_json(json.loads(row)) for row in rows]

    # smsError ---------------------------------------------------------------------------------
    async def push_sms_error(self, tenant_number: str, user_number: str, error: JSON) -> None:
        key = self._k("smserr", _pair(tenant_number, user_number))
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(key, _dumps(error))
        pipe.expire(key, self._retention)
        await self._call(pipe.execute())

    async def pop_sms_errors(self, tenant_number: str, user_number: str) -> list[JSON]:
        key = self._k("smserr", _pair(tenant_number, user_number))
        pipe = self._redis.pipeline(transaction=True)
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        rows, _ = await self._call(pipe.execute())
        return [json.loads(row) for row in rows]

    # Outbound ---------------------------------------------------------------------------------
    async def record_outbound(self, record: OutboundRecord) -> None:
        await self._call(self._redis.set(self._k("out", record.message_id), _outbound_data(record), ex=self._retention))

    async def find_outbound(self, message_id: str) -> OutboundRecord | None:
        data = await self._call(self._redis.get(self._k("out", message_id)))
        if data is None:
            return None
        row = json.loads(data)
        return OutboundRecord(
            message_id, row["tenant"], row["user"], row["session"], row["provider"], row.get("pipe"), row.get("first")
        )

    async def claim_status(self, provider_message_id: str, status: str) -> bool:
        key = self._k("status", f"{len(provider_message_id)}:{provider_message_id}:{status}")
        return bool(await self._call(self._redis.set(key, "1", nx=True, ex=self._retention)))

    # Claims that last until a time -----------------------------------------------------------
    async def claim_once(self, key: str, until: float) -> bool:
        # SET NX is the atomic check-and-claim; PXAT makes Redis forget the claim at `until` by itself. In ms,
        # rounded up so a claim never ends early, and at least 1 as Redis refuses a time <= 0: a time already
        # past makes SET answer OK and store nothing, so such a claim lasts no time, as in the other stores.
        until_ms = max(math.ceil(until * 1000), 1)
        return bool(await self._call(self._redis.set(self._k("claim", key), "1", nx=True, pxat=until_ms)))

    # Pipes ------------------------------------------------------------------------------------
    async def save_pipe(self, pipe: Pipe) -> None:
        pair = _pair(pipe.tenant_number, pipe.user_number)
        ttl = max(int(pipe.expires_at - pipe.created_at), 0) + self._retention
        await self._script(
            "save_pipe",
            [self._k("pipe", "id", pipe.pipe_id), self._k("pipe", "pair", pair)],
            [pipe.pipe_id, pair, _num(pipe.expires_at), _dumps(pipe.to_json()), ttl],
        )

    async def get_pipe(self, pipe_id: str) -> Pipe | None:
        data = await self._call(cast(Awaitable[str | None], self._redis.hget(self._k("pipe", "id", pipe_id), "data")))
        return None if data is None else Pipe.from_json(json.loads(data))

    async def pipe_for(self, tenant_number: str, user_number: str, now: float) -> Pipe | None:
        data = await self._script("pipe_for", [self._k("pipe", "pair", _pair(tenant_number, user_number))], [_num(now)])
        return None if data is None else Pipe.from_json(json.loads(data))

    async def delete_pipe(self, pipe_id: str) -> bool:
        return bool(await self._script("delete_pipe", [self._k("pipe", "id", pipe_id)], [pipe_id]))

    # Jobs -------------------------------------------------------------------------------------
    @staticmethod
    def _jobs(flat: list[Any]) -> list[Job]:
        jobs = []
        for i in range(0, len(flat), _JOB_FIELDS):
            job_id, kind, payload, order_key, run_at, attempts, last_error, begun = flat[i : i + _JOB_FIELDS]
            jobs.append(
                Job(
                    job_id,
                    kind,
                    json.loads(payload),
                    order_key,
                    float(run_at),
                    int(attempts),
                    last_error,
                    None if begun is None else int(begun),
                )
            )
        return jobs

    async def enqueue_job(self, job: Job) -> bool:
        return bool(await self._script("enqueue_job", [], _job_args(job)))

    async def lease_jobs(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[Job]:
        if limit <= 0:
            return []
        flat = await self._script("lease_jobs", [], [_num(now), limit, owner, _num(now + lease_seconds)])
        return [replace(job, owner=owner) for job in self._jobs(cast(list[Any], flat))]

    async def pending_job_count(self) -> int:
        return int(await self._call(self._redis.scard(self._k("jobs", "active"))))

    async def extend_job_leases(self, owner: str, job_ids: Sequence[str], until: float) -> None:
        if job_ids:
            await self._script("extend_jobs", [], [owner, _num(until), *job_ids])

    async def complete_job(self, job_id: str) -> None:
        await self._script("complete_job", [], [job_id, self._retention])

    # A turn's and a send's combined operations: one script each -------------------------------
    async def begin_turn(self, tenant_number: str, user_number: str, now: float) -> TurnStart:
        pair = _pair(tenant_number, user_number)
        keys = [self._k("pipe", "pair", pair), self._k("sess", "pair", pair), self._k("smserr", pair)]
        pipe, session, errors = await self._script("begin_turn", keys, [_num(now)])
        if pipe is not None:
            return TurnStart(Pipe.from_json(json.loads(pipe)), None, [])
        return TurnStart(
            None,
            None if session is None else Session.from_json(json.loads(session)),
            [json.loads(error) for error in errors],
        )

    async def end_turn(
        self, session: Session, *, ended: bool, inbound_key: str | None, jobs: Sequence[Job] = ()
    ) -> int:
        args: list[str | int | float] = [
            self._retention,
            inbound_key or "",
            "delete" if ended else "save",
            *self._session_args(session),
        ]
        for job in jobs:
            args += _job_args(job)
        keys = self._session_keys(session.tenant_number, session.user_number)
        return int(await self._script("end_turn", keys, args))

    async def begin_send(
        self,
        slot_key: str,
        cap: SenderRate | None,
        now: float,
        record: OutboundRecord,
        max_wait: float = math.inf,
        job: Job | None = None,
    ) -> float:
        keys = [self._k("slot", slot_key), self._k("pace", slot_key), self._k("out", record.message_id)]
        args = [*_slot_args(cap, now, max_wait), _outbound_data(record), self._retention]
        args += ["", "", 0] if job is None else [job.job_id, job.owner or "", job.attempts]
        wait = await self._script("begin_send", keys, args)
        if wait is None:
            raise LeaseLost("" if job is None else job.job_id)
        return float(wait)

    async def complete_send(self, job_id: str, record: OutboundRecord) -> None:
        await self._script(
            "complete_send", [], [job_id, self._retention, self._k("out", record.message_id), _outbound_data(record)]
        )

    async def retry_job(self, job_id: str, run_at: float, error: str) -> None:
        await self._script("retry_job", [], [job_id, _num(run_at), error])

    async def defer_job(self, job_id: str, run_at: float) -> None:
        await self._script("defer_job", [], [job_id, _num(run_at)])

    async def begin_job(self, job: Job) -> None:
        if not await self._script("begin_job", [], [job.job_id, job.owner or "", job.attempts]):
            raise LeaseLost(job.job_id)

    async def dead_letter_job(self, job_id: str, error: str, now: float) -> None:
        await self._script("dead_letter_job", [], [job_id, error, _num(now)])

    async def dead_letters(self, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        return self._jobs(cast(list[Any], await self._script("dead_letters", [], [limit])))

    async def replay_dead_letter(self, job_id: str, now: float) -> bool:
        return bool(await self._script("replay_dead_letter", [], [job_id, _num(now)]))

    # Lease owners -----------------------------------------------------------------------------
    async def beat_owner(self, owner: Owner, ttl_seconds: float, now: float) -> bool:
        keys = [self._k("owner", "alive", owner.owner_id), self._k("owners")]
        ttl_ms = max(math.ceil(ttl_seconds * 1000), 1)
        return bool(await self._script("beat_owner", keys, [owner.owner_id, _dumps(owner.to_json()), ttl_ms]))

    async def owners(self, now: float) -> list[OwnerState]:
        flat = cast(list[Any], await self._script("owners", [self._k("owners")], []))
        return [OwnerState(Owner.from_json(json.loads(flat[i])), bool(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def end_owner(self, owner_id: str) -> None:
        await self._call(self._redis.delete(self._k("owner", "alive", owner_id)))

    async def release_owners(self, owner_ids: Sequence[str], now: float, job_settle_seconds: float = 0.0) -> list[str]:
        if not owner_ids:
            return []
        args = [_num(now + job_settle_seconds), *owner_ids]
        return [str(i) for i in cast(list[Any], await self._script("release_owners", [], args))]

    # Sending pace -----------------------------------------------------------------------------
    async def reserve_send_slot(
        self, key: str, cap: SenderRate | None, now: float, max_wait: float = math.inf
    ) -> float:
        keys = [self._k("slot", key), self._k("pace", key)]
        return float(await self._script("reserve_send_slot", keys, _slot_args(cap, now, max_wait)))

    async def slow_sender(
        self, key: str, now: float, paced_at: float, retry_after: float | None, start_rate: float
    ) -> Pace:
        args = [_num(now), _num(paced_at), "" if retry_after is None else _num(retry_after), _num(start_rate)]
        rate, cut_at, hold_until = await self._script("slow_sender", [self._k("pace", key)], args)
        return Pace(float(rate), float(cut_at), float(hold_until))
