"""Per-key session leases in Redis: MAX_SESSIONS_PER_KEY across every instance sharing it.

One sorted set per key: member = session id, score = when its lease lapses. The instance holding a session
pushes the lapse forward every LEASE_REFRESH_S; a crashed instance's sessions stop counting LEASE_TTL_S later.
Taking a lease counts and adds in one script, so two instances cannot both take the last place.
"""

from __future__ import annotations

LEASE_TTL_S = 30.0
LEASE_REFRESH_S = 10.0


def lease_key(key_id: str) -> str:
    return f"presales:leases:{key_id}"


# KEYS[1] the key's set; ARGV: now, lapse, limit, session id, set TTL (ms)
TAKE_LEASE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
