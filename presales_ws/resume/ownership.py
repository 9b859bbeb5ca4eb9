"""Who holds a session's shared state (REDIS_URL): one holder at a time, so two copies never write over each other.

A holder is a session's copy on one instance (new, or taken over from another). It has an owner id, and Redis
names the session's owner: the holder's writes, its delete and its lease release each check that name in the
same script, so a copy another instance took over writes nothing any more. Every resume claims the session in
one script (TAKE): for the copy held where it arrived, if that copy still owns it; else for a new owner, taking
the state over, bumping the generation and saying so on SUPERSEDED_CHANNEL, so the instance holding the older
copy ends it at once. A claim is in progress until the claimer writes the state, which it does before its
client hears `ready` (CLAIM_TTL_S at most): a resume that meets a claim in progress was opened before the client
could know of the first, a retry racing it, and starts a new session, as a second waiting resume does on one
instance; a resume after `ready` takes the session over in turn.
"""

from __future__ import annotations

import secrets

CLAIM_TTL_S = 5.0  # a takeover whose claimer never wrote (it failed right after) stops blocking others after this
SUPERSEDED_CHANNEL = "presales:superseded"  # "<digest> <generation> <owner>": that owner holds the session now


def new_owner() -> str:
    return secrets.token_hex(8)


def owner_key(digest: str) -> str:
    return f"presales:owner:{digest}"


def claim_key(digest: str) -> str:
    return f"presales:claim:{digest}"


def generation_key(digest: str) -> str:
    return f"presales:generation:{digest}"


# KEYS: state, owner, claim, generation; ARGV: owner, state, ttl (ms), the writer's generation. 1 written; 0
# another holder owns the session. The generation lives as long as the state, and never below the writer's: a
# Redis that restarted (or a key that expired) gets it back with the state, so the next takeover's number is
# higher than that of every copy still held.
SAVE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
local generation = math.max(tonumber(redis.call('GET', KEYS[4]) or '0') or 0, tonumber(ARGV[4]))
redis.call('SET', KEYS[4], generation, 'PX', ARGV[3])
return 1
"""

# KEYS: state, owner; ARGV: owner. The owner's name stays until it expires: a late write of an older copy is
# still refused.
FORGET = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lease set, owner; ARGV: owner, member (the session id, which the new holder's lease uses too).
RELEASE = """
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""

# KEYS: state, owner, claim, generation; ARGV: owner, ttl (ms), claim ttl (ms), channel, digest, key id ('' when
# keys are off), sample rate, channels, the owner of a copy held where this resume arrived ('' when none).
# 0 unknown, foreign or another format; -1 another resume is under way; 1 the copy held here still owns the
# session (claimed for this resume until its next write); {generation, state} taken over for the new owner.
TAKE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, state = pcall(cjson.decode, raw)
if not ok or type(state) ~= 'table' then return 0 end
local key = state['key_id']
if key == nil or key == cjson.null then key = '' end
if key ~= ARGV[6] or tonumber(state['sample_rate']) ~= tonumber(ARGV[7])
    or tonumber(state['channels']) ~= tonumber(ARGV[8]) then
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local owner = redis.call('GET', KEYS[2])
if ARGV[9] ~= '' and (not owner or owner == ARGV[9]) then
  redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[3])
  return 1
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local generation = redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. generation .. ' ' .. ARGV[1])
return {generation, raw}
"""
