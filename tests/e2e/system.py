"""The whole system as separate processes: web server (gunicorn, as in
production), relay and consumers, each a real process against real Redis (or a
Redis Cluster) and FerretDB, with a database (SQLite, or PostgreSQL when
E2E_DATABASE=postgres), stream (or partitions) and Mongo database of its own.
Also real Redis, Redis Cluster and FerretDB servers a test can kill."""

from __future__ import annotations

import json
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventing.transport.client import RedisClient, client_for, server_starts
from eventing.transport.streams import partition_streams, retry_stream, run_id_key

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONSUMERS = {"inventory": 2, "orders": 1, "projections": 1}
# The consumer processes `make run` starts (the Procfile): one each. The benches run the system this way.
PROCFILE_CONSUMERS = {"inventory": 1, "orders": 1, "projections": 1}


def make_run_web_env() -> dict[str, str]:
    """gunicorn's workers as `make run` sizes them (gunicorn.conf.py's own rule), not the tests' 2."""
    return {"WEB_CONCURRENCY": str(runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"])}


def run_services(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    """What ``scripts/services <args>`` prints; when it fails, an AssertionError carrying its output (why)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "services"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"scripts/services {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
POSTGRES_URL = os.environ.get("E2E_POSTGRES_URL", "postgres://postgres@127.0.0.1:5433/eventmono")


# Redis Cluster's bus port for a node on port P (Redis's fixed offset).
CLUSTER_BUS_OFFSET = 10000
# The servers a test starts listen from here up to the kernel's ports for outgoing connections (cluster nodes 10000
# lower, so their bus ports are here): clear of every fixed port of scripts/services (Redis 6380, FerretDB 27018,
# PostgreSQL 5433, the cluster's 7101-7103 and their bus ports 17101-17103).
SERVER_PORTS_FROM = 28000
_handed_out: set[int] = set()


def first_outgoing_port() -> int:
    """The first port of the kernel's range for the local ends of outgoing connections."""
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def server_ports(count: int = 1, *, cluster_bus: bool = False) -> int:
    """The first of ``count`` consecutive ports for servers a test or bench starts, and may restart on the same port:
    each free to bind now and not handed out before in this process (with ``cluster_bus``, its Redis Cluster bus
    port too), all below the kernel's range of ports for outgoing connections.

    A port from that range (what binding port 0 hands out) can become the local end of any connection to any
    server at any moment: before the server binds it, or while a test has the server down. Then the server
    aborts (seen in CI: a cluster node failed with "Failed listening on port 49436 (cluster)", a bus port on
    which no server listened when it was checked)."""
    first_outgoing = first_outgoing_port()
    shift = CLUSTER_BUS_OFFSET if cluster_bus else 0
    firsts = range(SERVER_PORTS_FROM - shift, first_outgoing - count + 1 - shift)
    assert len(firsts) > 100, f"too few ports below the outgoing range ({first_outgoing}) for test servers"
    pick = random.SystemRandom()  # not the random module's state, which a test may have seeded
    while True:
        first = pick.choice(firsts)
        ports = [port + bus for port in range(first, first + count) for bus in {0, shift}]
        if not _handed_out.intersection(ports) and all(bindable(port) for port in ports):
            _handed_out.update(ports)
            return first


def bindable(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:``port`` now: no socket, listening or connected, holds it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def mongo_uri(base_uri: str, database: str) -> str:
    scheme, _, rest = base_uri.partition("?")[0].partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{database}"


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """A server a test starts, kills and restarts from its own data directory."""

    def __init__(self, name: str, workdir: Path, *, cluster_bus: bool = False) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = server_ports(cluster_bus=cluster_bus)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.dir)
        wait_for(lambda: port_open(self.port), timeout=30, what=f"{self.name} on port {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# Writes that make a Redis's AOF large: replaying AOF_WRITES of them takes a good part of a second, long enough to
# catch a start that does not wait for it (checked: with starts waiting only for the port, the tests that use them
# fail). AOF_FILL makes ARGV[1] of them, keys ARGV[2] .. i, in one EVAL.
AOF_WRITES = 500_000
AOF_FILL = "for i = 1, tonumber(ARGV[1]) do redis.call('set', ARGV[2] .. i, 'v') end"


class RedisProcess(ServerProcess):
    """A redis-server. It opens its port before it has replayed its AOF, and answers every command with LOADING until
    then: a start returns once it answers PING, as scripts/services' does."""

    def start(self) -> None:
        super().start()
        wait_for(self._loaded, timeout=60, what=f"{self.name} on port {self.port} to load its data")

    def client_options(self) -> dict[str, Any]:
        """How a client gets in (a server that asks for credentials or TLS says so)."""
        return {}

    def _loaded(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: see {self.dir / 'server.log'}")
        # Retry(NoBackoff(), 0): redis-py would otherwise retry LOADING itself, backing off for seconds.
        options = {"host": "127.0.0.1", "port": self.port, "socket_timeout": 2, **self.client_options()}
        try:
            with redis.Redis(**options, retry=Retry(NoBackoff(), 0)) as client:
                return bool(client.ping())
        except redis.BusyLoadingError:
            return False


class RedisServer(RedisProcess):
    """Debian's redis-server with AOF everysec, as scripts/services runs it."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("redis", workdir)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        ]  # fmt: skip


class RedisClusterNode(RedisProcess):
    """One master of a Redis Cluster, configured as scripts/services runs the local cluster."""

    def __init__(self, workdir: Path, index: int) -> None:
        super().__init__(f"redis-cluster-{index}", workdir, cluster_bus=True)

    def command(self) -> list[str]:
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
            "--cluster-require-full-coverage", "no",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        ]  # fmt: skip

    def cluster_info(self) -> dict[str, str]:
        try:
            raw = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True).execute_command("CLUSTER INFO")
        except redis.RedisError:
            return {}
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        return dict(line.split(":", 1) for line in str(raw).splitlines() if ":" in line)

    def wipe(self) -> None:
        """Lose the data (the AOF), keep the cluster configuration: a master back from a lost disk."""
        for path in self.dir.glob("appendonly*"):
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters and no replicas on free ports, created as scripts/services
    creates the local one, whose masters a test can kill and restart one by one."""

    def __init__(self, workdir: Path, *, masters: int = 3) -> None:
        self.nodes = [RedisClusterNode(workdir, index) for index in range(masters)]
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        wait_for(
            lambda: all(node.cluster_info().get("cluster_state") == "ok" for node in self.nodes),
            timeout=timeout,
            what="every node of the cluster to report cluster_state:ok",
        )

    def node_of(self, key: str) -> RedisClusterNode:
        """The master serving ``key``'s slot."""
        client = redis.Redis(port=self.nodes[0].port, socket_timeout=5)
        slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for start, end, master, *_replicas in client.execute_command("CLUSTER SLOTS"):
            if int(start) <= slot <= int(end):
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class FerretDBServer(ServerProcess):
    """FerretDB v1 on SQLite, the binary scripts/services builds."""

    @staticmethod
    def binary() -> str:
        """The patched binary scripts/services builds (its path carries the patches' digest)."""
        return run_services("ferretdb-bin", timeout=600).strip()

    def __init__(self, workdir: Path) -> None:
        super().__init__("ferretdb", workdir)
        self.uri = f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        (self.dir / "data").mkdir(exist_ok=True)
        return [
            self.binary(), "--handler=sqlite", f"--sqlite-url=file:{self.dir / 'data'}/?_pragma=synchronous(normal)",
            f"--state-dir={self.dir}",
            f"--listen-addr=127.0.0.1:{self.port}", "--debug-addr=-", "--telemetry=disable", "--log-level=warn",
        ]  # fmt: skip


class System:
    def __init__(
        self,
        workdir: Path,
        *,
        redis_url: str,
        mongodb_uri: str,
        consumers: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        database: str | None = None,
    ):
        tag = uuid.uuid4().hex[:10]
        self.workdir = workdir
        self.stream = f"e2e-{tag}"
        self.mongo_db = f"e2e_{tag}"
        self.port = server_ports()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.consumers = consumers or DEFAULT_CONSUMERS
        self.redis: RedisClient = client_for(redis_url, decode_responses=True, socket_timeout=10)
        self.mongodb_uri = mongo_uri(mongodb_uri, self.mongo_db)
        self.password = uuid.uuid4().hex
        self.database = database or os.environ.get("E2E_DATABASE", "sqlite")
        self.env = {
            **os.environ,
            "DATABASE_URL": self._create_database(tag),
            "REDIS_URL": redis_url,
            "MONGODB_URI": self.mongodb_uri,
            "EVENTING_STREAM": self.stream,
            "EVENTING_BLOCK_MS": "500",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SUPERUSER_USERNAME": "e2e-staff",
            "DJANGO_SUPERUSER_PASSWORD": self.password,
            "DJANGO_SUPERUSER_EMAIL": "e2e@example.com",
            "WEB_CONCURRENCY": "2",  # gunicorn workers: parallel requests, without a pool per core per system
            "DJANGO_DEBUG": "true",  # a local run, as `make run` is
            # Load and fault runs send far more orders per second from one user than the write limit lets a
            # client; its own test (tests/test_security.py) checks the limit.
            "DJANGO_THROTTLE_WRITE_RATE": "1000000/s",
            "CACHE_KEY_PREFIX": f"e2e-{tag}",
            **(env or {}),
        }
        self.partitions = int(self.env.get("EVENTING_PARTITIONS", "1"))
        # The bus's streams (the stream itself with one partition).
        self.streams = partition_streams(stream=self.stream, partitions=self.partitions)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        self._token: str | None = None

    def _create_database(self, tag: str) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self.workdir / 'db.sqlite3'}"
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "e2e_{tag}"')
        self._pg_database = f"e2e_{tag}"
        return POSTGRES_URL.rsplit("/", 1)[0] + f"/e2e_{tag}"

    # -- processes ------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def spawn(self, name: str, *args: str) -> None:
        """Run ``manage.py <args>`` as process ``name``."""
        self.spawn_command(name, [sys.executable, str(ROOT / "manage.py"), *args])

    def spawn_command(self, name: str, command: list[str]) -> None:
        """Run ``command`` as process ``name``, logging to ``<workdir>/<name>.log``."""
        self.commands[name] = command
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=log)

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v0")
        self.manage("createsuperuser", "--noinput")
        # The Procfile's web process, on this system's port.
        gunicorn = [sys.executable, "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py")]
        self.spawn_command("web", [*gunicorn, "--bind", f"127.0.0.1:{self.port}"])
        self.spawn("relay", "relay_outbox")
        for name, count in self.consumers.items():
            for i in range(count):
                self.start_consumer(name, i)
        wait_for(self._web_up, timeout=60, what="the web server")

    def start_consumer(self, name: str, index: int) -> str:
        """Run consumer ``name`` with the consumer id "<name>-<index>" (the same on a restart)."""
        proc = f"{name}-{index}"
        self.spawn(proc, "run_consumer", name, "--consumer-id", proc)
        return proc

    def restart(self, proc: str) -> None:
        self.spawn_command(proc, self.commands[proc])

    def kill(self, proc: str, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        self.procs[proc].send_signal(sig)
        return self.procs[proc].wait(timeout=timeout)

    def _web_up(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.base_url}/api/orders/", timeout=2)  # noqa: S310 - loopback only
        except urllib.error.HTTPError:
            return True  # 401: up and refusing the anonymous request
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 30) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=10)
        return codes

    def cleanup(self) -> None:
        try:
            keys = list(self.redis.scan_iter(f"*{self.stream}*"))  # the streams, partitions, bookkeeping
            if keys:
                self.redis.delete(*keys)
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            pass  # a test may have stopped its own Redis for good
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        try:
            MongoClient(self.mongodb_uri, serverSelectionTimeoutMS=3000).drop_database(self.mongo_db)
        except PyMongoError:
            pass  # a test may have stopped its own FerretDB for good
        if self.database == "postgres":
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_database}" WITH (FORCE)')

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    # -- HTTP ---------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            _, body, _ = self.request(
                "POST", "/api/auth/token/", {"username": "e2e-staff", "password": self.password}, auth=False
            )
            self._token = body["token"]
        return self._token

    def request(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, auth: bool = True
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            req.add_header("Authorization", f"Token {self.token()}")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback only
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null"), dict(err.headers)

    def get_all(self, path: str) -> list[dict[str, Any]]:
        """Every result of a paginated listing."""
        results: list[dict[str, Any]] = []
        sep = "&" if "?" in path else "?"
        page = 1
        while True:
            status, body, _ = self.request("GET", f"{path}{sep}page={page}&page_size=500")
            assert status == 200, body
            results += body["results"]
            if not body["next"]:
                return results
            page += 1

    def add_stock(self, stock: dict[str, int]) -> None:
        for sku, quantity in stock.items():
            status, body, _ = self.request(
                "POST", "/api/inventory/items/", {"sku": sku, "name": sku, "quantity": quantity}
            )
            assert status == 201, body
        self.wait_settled()  # the orders consumer has learned the skus

    def place_orders(self, bodies: list[dict[str, Any]], *, threads: int = 8) -> list[dict[str, Any]]:
        """POST the orders from ``threads`` threads at once; each gets 202. Returns the answers."""

        def place(body: dict[str, Any]) -> dict[str, Any]:
            sent = time.time()
            status, answer, _ = self.request("POST", "/api/orders/", body)
            assert status == 202, answer
            return {**answer, "sent": sent, "lines": body["lines"], "customer_id": body["customer_id"]}

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(place, bodies))

    # -- state --------------------------------------------------------------

    def dumpdata(self, *models: str) -> list[dict[str, Any]]:
        return json.loads(self.manage("dumpdata", *models, timeout=300).stdout)

    def groups(self, stream: str | None = None) -> list[dict[str, Any]]:
        """The groups of ``stream`` (default: the stream, or its first partition)."""
        try:
            return self.redis.xinfo_groups(stream or self.streams[0])
        except redis.ResponseError:
            return []

    def pending(self) -> int:
        """Entries delivered and not acked, over every group of every partition and of its retry streams."""
        total = 0
        for partition in self.streams:
            groups = self.groups(partition)
            retries = [retry_stream(partition, group["name"]) for group in groups]
            total += sum(group["pending"] for group in groups)
            total += sum(
                group["pending"] for retry in retries if self.redis.exists(retry) for group in self.groups(retry)
            )
        return total

    def settled(self) -> bool:
        """Every consumer group has read to the end of every partition and acked everything, and the relay has
        seen the Redis server behind each partition (after a restart, it re-publishes first)."""
        for partition in self.streams:
            groups = self.groups(partition)
            if len(groups) != len(self.consumers) or not all(g["lag"] == 0 and g["pending"] == 0 for g in groups):
                return False
        return self.relay_saw_restarts()

    def relay_saw_restarts(self) -> bool:
        """The relay has recorded the run id of the server now holding each partition. It records it only after
        re-publishing what a restart of that server may have lost; until then the bus is not settled."""
        starts = server_starts(self.redis, self.streams)
        return len(starts) == len(self.streams) and all(
            self.redis.get(run_id_key(stream)) == start.run_id for stream, start in starts.items()
        )

    def wait_settled(self, *, timeout: float = 60, quiet_for: float = 0.5) -> None:
        """Wait until the groups stay settled for ``quiet_for`` seconds (a handler may still be emitting)."""
        deadline = time.monotonic() + timeout
        calm_since = None
        while time.monotonic() < deadline:
            try:
                calm = self.settled()
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                calm = False
            if calm:
                calm_since = calm_since or time.monotonic()
                if time.monotonic() - calm_since >= quiet_for:
                    return
            else:
                calm_since = None
            time.sleep(0.05)
        raise TimeoutError(f"consumers did not settle within {timeout}s: {[self.groups(s) for s in self.streams]}")

    def wait_all_final(self, placed: list[dict[str, Any]], *, timeout: float = 120) -> None:
        customers = sorted({o["customer_id"] for o in placed})

        def all_final() -> bool:
            views = {v["id"]: v["status"] for c in customers for v in self.get_all(f"/api/orders/?customer_id={c}")}
            return all(views.get(o["id"]) in FINAL for o in placed)

        wait_for(all_final, timeout=timeout, what="every order to reach a final status", interval=0.5)

    @staticmethod
    def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
        wait_for(predicate, timeout=timeout, what=what)
