"""The Redis commands, keys and channels kcap needs: the embedded Redis's one user, and the
ACL users per role that docs/security.md gives for a shared broker.

The command list is what kombu 5.7 (transport, QoS, pidbox), Celery 5.x (events, remote
control), Flower 2 and kcap itself send, read from their code and checked by running the
test suite against a Redis that allows nothing else (MONITOR shows every command, the ones
inside kombu's and redis-py's Lua scripts included). Admin commands are not in it: no
CONFIG, SAVE, FLUSHALL, DEBUG, SHUTDOWN, MODULE, ACL, KEYS, INFO, CLIENT, REPLICAOF.
"""

from __future__ import annotations

KCAP_COMMANDS = (
    # connection (AUTH is always allowed)
    "ping",
    "hello",
    "select",
    # queues (kombu lists), kcap's dead letters
    "brpop",
    "lpush",
    "rpush",
    "rpop",
    "llen",
    "lrange",
    "ltrim",
    # kombu's unacknowledged messages; kcap's outcome counters, `kcap status`
    "hset",
    "hget",
    "hmget",  # kcap's in-flight paths, read in one call
    "hdel",
    "hgetall",
    "hscan",
    "hincrby",
    # kombu's unacked index and binding deadlines; kcap's in-flight set and rates
    "zadd",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zscore",
    "zcard",
    "zcount",
    "zremrangebyscore",
    # kombu's exchange bindings
    "sadd",
    "srem",
    "smembers",
    # kombu's restore mutex (a redis-py lock), kcap's counters
    "get",
    "set",
    "del",
    "exists",
    "incrby",  # redis-py sends INCR as INCRBY
    "expire",
    "pexpire",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    # Celery events and remote control (Flower): fanout over pub/sub patterns
    "publish",
    "psubscribe",
    "punsubscribe",
    # kombu's binding scripts and redis-py's lock release run as EVALSHA (TIME inside)
    "evalsha",
    "script|load",
    "script|exists",
    "time",
)

_COMMAND_RULES = "-@all " + " ".join(f"+{command}" for command in KCAP_COMMANDS)

# The embedded Redis serves one kcap instance: every key and channel, kcap's commands only.
EMBEDDED_USER_RULES = f"~* &* {_COMMAND_RULES}"

GPU_USER = "kcap-gpu"
STORAGE_USER = "kcap-storage"

# kombu's own keys, the same for every queue: its unacknowledged messages (one hash for all
# queues), its exchange bindings, and the remote-control mailboxes and replies.
_KOMBU_KEYS = (
    "~unacked",
    "~unacked_index",
    "~unacked_mutex",
    "~_kombu.binding.*",
    "~_kombu.binding_permanent.*",
    "~_kombu.binding_deadlines",
    "~*.celery.pidbox*",
)


def role_rules(user: str, *, queue_prefix: str = "", db: int = 0) -> str:
    """The ACL rules of a role user for a kcap instance (its --queue-prefix, its Redis db).

    kcap-gpu may take and re-queue caption jobs, only put results on the route queue (not
    read or take them), read the stored images of large jobs, count its job starts and add
    dead letters (not read them). It cannot
    touch the producer's in-flight set, the outcome counts or any other key. kcap-storage
    (producer, route worker, Flower, `kcap status`) has every kcap and kombu key.
    """
    kcap = f"kcap:{queue_prefix}"
    channels = f"&/{db}.celeryev/* &/{db}.celery.pidbox"
    if user == GPU_USER:
        keys = [
            f"~{queue_prefix}caption*",
            f"~{queue_prefix}shards*",
            f"%W~{queue_prefix}route*",
            f"~{kcap}attempts:{queue_prefix}caption:*",
            f"~{kcap}attempts:{queue_prefix}shards:*",
            # Dataset mode: a shard worker files its own samples and says how far it got.
            f"~{kcap}shard*",
            f"%R~{kcap}blob:*",
            f"%W~{kcap}dead_letters",
            f"~{kcap}dead_letters:total",
        ]
    elif user == STORAGE_USER:
        keys = [f"~{queue_prefix}caption*", f"~{queue_prefix}route*", f"~{queue_prefix}shards*", f"~{kcap}*"]
    else:
        raise ValueError(f"no such role user: {user}")
    return " ".join([*keys, *_KOMBU_KEYS, channels, _COMMAND_RULES])


def acl_setuser_lines(*, queue_prefix: str = "", db: int = 0) -> list[str]:
    """The `ACL SETUSER` lines of docs/security.md (Redis 7 or later), with placeholder passwords."""
    return [
        f"ACL SETUSER {user} reset on >{password} {role_rules(user, queue_prefix=queue_prefix, db=db)}"
        for user, password in ((STORAGE_USER, "STORAGE_PASSWORD"), (GPU_USER, "GPU_PASSWORD"))
    ]
