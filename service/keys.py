"""API keys: created once and shown once, stored only as HMAC-SHA256(pepper, key) in Redis.

Also the `spacetime keys create|list|revoke` subcommand.

Redis: `st:key:<hash>` -> hash {id, name, created_at}; `st:keyid:<id>` -> hash {hash, name,
created_at, revoked}; `st:keys` set of ids. A key's id is the owner of its jobs.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time

import redis

KEY_PREFIX = "sk-st-"

# authorize(key hash ('' in open mode), owner for open mode, limit per window (0 = off), window_s,
# now_s) -> owner ('' = unknown key), retry_after_s ('0' = allowed). Auth and the rate limit in
# one round trip; also the first half of the status-poll script (service/jobscripts.POLL).
AUTHORIZE_FN = """
local function authorize(digest, open_owner, limit, window, now)
  local owner = open_owner
  if digest ~= '' then
    owner = redis.call('HGET', 'st:key:' .. digest, 'id')
    if not owner then return '', '0' end
  end
  limit, window, now = tonumber(limit), tonumber(window), tonumber(now)
  if limit > 0 then
    local slot = math.floor(now / window)
    local k = 'st:rate:' .. owner .. ':' .. slot
    local n = redis.call('INCR', k)
    if n == 1 then redis.call('EXPIRE', k, window + 1) end
    if n > limit then return owner, tostring((slot + 1) * window - now) end
  end
  return owner, '0'
end
"""
AUTHORIZE = AUTHORIZE_FN + """
local owner, retry = authorize(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {owner, retry}
"""

# ARGV: owner, limit, window_s, now_s -> seconds to wait (0 = allowed)
COUNT_CREATE = """
local limit, window, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if limit <= 0 then return 0 end
local slot = math.floor(now / window)
local k = 'st:creates:' .. ARGV[1] .. ':' .. slot
local n = redis.call('INCR', k)
if n == 1 then redis.call('EXPIRE', k, window + 1) end
if n > limit then return (slot + 1) * window - now end
return 0
"""


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def create_key(client: redis.Redis, pepper: str, name: str) -> tuple[str, str]:
    """Returns (key id, the key itself). The key is never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    digest = hash_key(key, pepper)
    created = str(int(time.time()))
    pipe = client.pipeline()
    pipe.hset(f"st:key:{digest}", mapping={"id": key_id, "name": name, "created_at": created})
    pipe.hset(f"st:keyid:{key_id}", mapping={"hash": digest, "name": name, "created_at": created, "revoked": "0"})
    pipe.sadd("st:keys", key_id)
    pipe.execute()
    return key_id, key


def list_keys(client: redis.Redis) -> list[dict[str, str]]:
    rows = []
    for key_id in sorted(client.smembers("st:keys")):
        info = client.hgetall(f"st:keyid:{key_id}")
        rows.append({"id": key_id, **{k: v for k, v in info.items() if k != "hash"}})
    return rows


def revoke_key(client: redis.Redis, key_id: str) -> bool:
    info = client.hgetall(f"st:keyid:{key_id}")
    if not info:
        return False
    client.delete(f"st:key:{info['hash']}")
    client.hset(f"st:keyid:{key_id}", "revoked", "1")
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: SPACETIME_REDIS_URL)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", default="default", help="a label for the key")
    sub.add_parser("list", help="list keys (ids and names; keys themselves are not stored)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")


def run(args: argparse.Namespace) -> int:
    from service.config import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis_url or settings.redis_url, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"error: cannot reach Redis at {args.redis_url or settings.redis_url}: {exc}", file=sys.stderr)
        return 1
    if args.action == "create":
        key_id, key = create_key(client, settings.key_pepper, args.name)
        print(f"id:  {key_id}\nkey: {key}\n(store the key now: only its hash is kept)")
    elif args.action == "list":
        for row in list_keys(client):
            state = "revoked" if row.get("revoked") == "1" else "active"
            print(f"{row['id']}  {state:8s} created {row.get('created_at', '?')}  {row.get('name', '')}")
    elif args.action == "revoke":
        if not revoke_key(client, args.key_id):
            print(f"error: no key with id {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0
