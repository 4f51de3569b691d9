"""The whole system as separate processes: web server, relay and consumers,
each a real `manage.py` process against the real Redis and FerretDB, with a
SQLite database, stream and Mongo database of its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONSUMERS = {"inventory": 2, "orders": 1, "projections": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mongo_uri(base_uri: str, database: str) -> str:
    scheme, _, rest = base_uri.partition("?")[0].partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{database}"


class System:
    def __init__(self, workdir: Path, *, redis_url: str, mongodb_uri: str, consumers: dict[str, int] | None = None):
        tag = uuid.uuid4().hex[:10]
        self.workdir = workdir
        self.stream = f"e2e-{tag}"
        self.mongo_db = f"e2e_{tag}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.consumers = consumers or DEFAULT_CONSUMERS
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.mongodb_uri = mongo_uri(mongodb_uri, self.mongo_db)
        self.password = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "REDIS_URL": redis_url,
            "MONGODB_URI": self.mongodb_uri,
            "EVENTING_STREAM": self.stream,
            "EVENTING_BLOCK_MS": "500",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SUPERUSER_USERNAME": "e2e-staff",
            "DJANGO_SUPERUSER_PASSWORD": self.password,
            "DJANGO_SUPERUSER_EMAIL": "e2e@example.com",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None

    # -- processes ------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def spawn(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args], env=self.env, cwd=ROOT, stdout=log, stderr=log
        )

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v0")
        self.manage("createsuperuser", "--noinput")
        self.spawn("web", "runserver", "--noreload", f"127.0.0.1:{self.port}")
        self.spawn("relay", "relay_outbox")
        for name, count in self.consumers.items():
            for i in range(count):
                self.spawn(f"{name}-{i}", "run_consumer", name)
        self.wait_for(lambda: self._web_up(), timeout=60, what="the web server")

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
        self.redis.delete(self.stream)
        from pymongo import MongoClient

        MongoClient(self.mongodb_uri, serverSelectionTimeoutMS=3000).drop_database(self.mongo_db)

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
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback only
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

    # -- state --------------------------------------------------------------

    def dumpdata(self, *models: str) -> list[dict[str, Any]]:
        return json.loads(self.manage("dumpdata", *models).stdout)

    def groups(self) -> list[dict[str, Any]]:
        try:
            return self.redis.xinfo_groups(self.stream)
        except redis.ResponseError:
            return []

    def settled(self) -> bool:
        """Every consumer group has read to the end of the stream and acked everything."""
        groups = self.groups()
        return len(groups) == len(self.consumers) and all(g["lag"] == 0 and g["pending"] == 0 for g in groups)

    def wait_settled(self, *, timeout: float = 60, quiet_for: float = 0.5) -> None:
        """Wait until the groups stay settled for ``quiet_for`` seconds (a handler may still be emitting)."""
        deadline = time.monotonic() + timeout
        calm_since = None
        while time.monotonic() < deadline:
            if self.settled():
                calm_since = calm_since or time.monotonic()
                if time.monotonic() - calm_since >= quiet_for:
                    return
            else:
                calm_since = None
            time.sleep(0.05)
        raise TimeoutError(f"consumers did not settle within {timeout}s: {self.groups()}")

    @staticmethod
    def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
