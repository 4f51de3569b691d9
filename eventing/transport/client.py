"""The process's Redis clients, built from settings.REDIS_URL: a ``redis.Redis``, or a ``RedisCluster``
when the URL names a cluster (``redis+cluster://host:port/0``, ``rediss+cluster://`` for TLS; any node
serves as the seed, the client learns the others and which slots each serves)."""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
from django.conf import settings
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import (
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    ClusterError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

# Either client answers the commands the bus sends; on a cluster each command's keys share one slot.
RedisClient: TypeAlias = redis.Redis | RedisCluster
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

# Redis refusing this process's credentials (a wrong password, an ACL user without the rights it
# needs). Retrying cannot help, so processes stop with a clear error instead of backing off
# forever. Caught before redis.ConnectionError, of which AuthenticationError is a kind.
CREDENTIAL_ERRORS: tuple[type[redis.RedisError], ...] = (
    redis.AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
)

# A cluster that cannot serve a slot for now: its master is down (CLUSTERDOWN, MASTERDOWN), slots are
# moving (TRYAGAIN), the client ran out of redirections (ClusterError) or knows no node for the slot
# (SlotNotCoveredError and the client's other RedisClusterExceptions). Like an unreachable Redis: wait
# and try again. RedisClusterException is no RedisError, so whoever catches RedisError catches these too.
CLUSTER_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    ClusterDownError,
    TryAgainError,
    ClusterError,
    RedisClusterException,
)

# A server that does not answer (or a cluster that cannot serve its slots), as opposed to an error of the
# command; on a cluster it concerns one master, whose partitions wait while the others carry on.
SERVER_DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    *CLUSTER_UNAVAILABLE_ERRORS,
)

# Whatever a Redis call can raise about Redis itself: a server's error or the cluster client's own.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, *CLUSTER_UNAVAILABLE_ERRORS)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


@cache
def _client(url: str, socket_timeout: float | None, decode_responses: bool) -> RedisClient:
    return client_for(
        url,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout or 5.0, 5.0),
        health_check_interval=30,
    )


def client_for(url: str, **options: Any) -> RedisClient:
    """A new client for ``url``: a RedisCluster for a ``redis+cluster://`` or ``rediss+cluster://`` URL
    (given to redis-py as ``redis://`` or ``rediss://``), else a Redis."""
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme])), **options)
    return redis.Redis.from_url(url, **options)


def send_pipelined(client: redis.Redis, commands: Sequence[tuple[str | bytes, ...]]) -> None:
    """Send ``commands`` to one Redis in one write and read every reply, as ``pipeline(transaction=False)``
    does; the first error reply is raised once all are read.

    Without the pipeline's per-command Python work (queueing, argument checks, reply parsing and
    callbacks), which took half of the relay's time on a backlog: each command is packed by hiredis, as the
    client packs it, and each reply read by the connection's own parser. A lost connection is retried as
    the client's pipelines are, by its connections' Retry (none for a client built from a URL): the whole
    batch again, so a command that reached Redis before the connection dropped runs twice (XADD: consumers
    drop the duplicate by event id). Not for a cluster,
    whose commands go to the node of their slot, and not with tracing on (the Redis instrumentation spans
    the client's pipelines, not this)."""
    # hiredis types its argument as a 1-tuple; it packs a tuple of any length.
    packed = [b"".join([hiredis.pack_command(command) for command in commands])]  # type: ignore[arg-type]
    pool = client.connection_pool
    connection = pool.get_connection()

    def attempt() -> redis.ResponseError | None:
        connection.send_packed_command(packed)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        first_error: redis.ResponseError | None = None
        for _ in commands:
            try:
                connection.read_response()
            except redis.ResponseError as exc:  # an error reply: the connection is still in step
                first_error = first_error or exc
        return first_error

    try:
        error = connection.retry.call_with_retry(attempt, lambda _error: connection.disconnect())  # type: ignore[no-untyped-call]
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]  # replies may be left unread: not handed out again
        raise
    finally:
        pool.release(connection)
    if error is not None:
        raise error


def get_redis(*, socket_timeout: float | None = 10.0, decode_responses: bool = True) -> RedisClient:
    """A shared client. Blocking readers pass a timeout above their BLOCK time. Replies are text, or
    bytes with ``decode_responses=False``: what a stream holds need not be UTF-8, and only bytes read it all."""
    return _client(settings.REDIS_URL, socket_timeout, decode_responses)


class LuaScript:
    """A Lua script run by its digest (EVALSHA); a server that does not know it yet gets it whole (EVAL, which
    also caches it there). In place of redis-py's ``register_script``, whose Script loads a missing script with
    SCRIPT LOAD — which a cluster client sends to every master, so while one master is down a script new to
    another (one just restarted, or never sent that script) could not run there either."""

    def __init__(self, client: RedisClient, script: str) -> None:
        self.client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by their SHA-1

    def __call__(self, *, keys: Sequence[str], args: Sequence[Any] = (), client: RedisClient | None = None) -> Any:
        """Run on the server of ``keys`` (on a cluster they share one slot), through ``client`` if given."""
        target = client if client is not None else self.client
        try:
            return target.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return target.eval(self.script, len(keys), *keys, *args)


@dataclass(frozen=True)
class ServerStart:
    """A Redis server's run (its id changes at every restart) and when it started, in ms by its own clock,
    rounded down to the second before (INFO counts uptime in whole seconds)."""

    run_id: str
    started_ms: int


def server_starts(client: RedisClient, keys: list[str]) -> dict[str, ServerStart]:
    """The run of the Redis server that holds each key (on a cluster, the master serving its slot), asking
    each server once. On a cluster the keys of a master that does not answer are left out (they are asked
    again once it does)."""
    if not isinstance(client, RedisCluster):
        return dict.fromkeys(keys, _start(client.info("server")))
    by_node: dict[str, ServerStart | None] = {}
    found: dict[str, ServerStart] = {}
    for key in keys:
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        if node.name not in by_node:
            try:
                by_node[node.name] = _start(client.info("server", target_nodes=node))
            except CREDENTIAL_ERRORS:
                raise
            except SERVER_DOWN_ERRORS:
                by_node[node.name] = None
        known = by_node[node.name]
        if known is not None:
            found[key] = known
    return found


def _start(info: Mapping[str, Any]) -> ServerStart:
    now_ms = int(info["server_time_usec"]) // 1000
    return ServerStart(str(info["run_id"]), now_ms - (int(info["uptime_in_seconds"]) + 1) * 1000)


def is_missing_key(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a command because its key does not exist (XINFO on a stream that is gone),
    rather than because the cluster cannot serve it (CLUSTERDOWN is a ResponseError too)."""
    return "no such key" in str(exc).lower()


def credentials_refused(exc: redis.RedisError) -> str:
    """What to tell an operator whose REDIS_URL Redis refuses, without its password."""
    return (
        f"Redis at {redact_url(settings.REDIS_URL)} refused this process's credentials ({exc}); "
        "fix the user and password in REDIS_URL, or the user's ACL rules. Not retrying."
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
