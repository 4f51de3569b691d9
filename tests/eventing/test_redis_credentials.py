"""The bus through a Redis that demands an ACL user and password, as production runs it: the right
credentials carry events end to end, wrong ones stop each process with a clear error, at once, and no
password reaches a log line."""

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command

from eventing.models import ProcessedEvent
from eventing.transport.relay import RelayError, relay_forever
from inventory.selectors import stock_view_get
from inventory.services import stock_item_create
from orders.models import CatalogItem
from tests.e2e.system import RedisServer
from tests.helpers import pump

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "s3cret-Pa55word"


class AclRedisServer(RedisServer):
    """Redis whose default user is off: only ``bus`` with its password gets in."""

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--user",
            "default",
            "off",
            "--user",
            "bus",
            "on",
            f">{PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ]

    def client_options(self) -> dict[str, Any]:
        return {"username": "bus", "password": PASSWORD}


class TlsAclRedisServer(AclRedisServer):
    """The same, reached only over TLS, with a certificate of its own made for the test."""

    def command(self) -> list[str]:
        self.ca = self.dir / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(self.dir / "key.pem"), "-out", str(self.ca)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        plain = super().command()
        port = plain.index("--port")
        return [
            *plain[:port], "--port", "0", "--tls-port", str(self.port), *plain[port + 2 :],
            "--tls-cert-file", str(self.ca), "--tls-key-file", str(self.dir / "key.pem"), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        return {**super().client_options(), "ssl": True, "ssl_ca_certs": str(self.ca)}


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedisServer]:
    server = AclRedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsAclRedisServer]:
    server = TlsAclRedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def url(server: AclRedisServer, password: str) -> str:
    return f"redis://bus:{password}@127.0.0.1:{server.port}/0"


def refused_logins(server: AclRedisServer) -> int:
    """Failed logins, as Redis's ACL LOG counts them."""
    admin = redis.Redis(port=server.port, username="bus", password=PASSWORD, socket_timeout=5)
    return sum(int(entry["count"]) for entry in admin.acl_log() if entry["reason"] == "auth")


def test_the_bus_runs_through_an_acl_user_and_no_log_line_shows_its_password(settings, acl_redis, caplog):
    settings.REDIS_URL = url(acl_redis, PASSWORD)
    caplog.set_level(logging.INFO)

    stock_item_create(sku="ACL-1", name="Behind a password", quantity=3)
    assert relay_forever(stop=threading.Event(), once=True, grace_seconds=0) >= 0
    pump()

    assert ProcessedEvent.objects.filter(consumer="orders").count() == 1  # the catalogue learned the sku
    assert CatalogItem.objects.filter(sku="ACL-1").exists()
    assert stock_view_get(sku="ACL-1").available == 3  # and the projections consumer wrote the view
    assert any("relay publishing to redis://bus:***@" in record.getMessage() for record in caplog.records)
    assert PASSWORD not in caplog.text
    assert refused_logins(acl_redis) == 0


def test_a_wrong_password_stops_the_consumer_with_a_clear_error_and_no_retry_storm(settings, acl_redis, caplog):
    settings.REDIS_URL = url(acl_redis, "wrong-password")

    started = time.monotonic()
    with pytest.raises(CommandError) as refused:
        call_command("run_consumer", "inventory", "--block-ms", "100")

    message = str(refused.value)
    assert "refused this process's credentials" in message and "invalid username-password pair" in message
    assert "redis://bus:***@" in message and "wrong-password" not in message
    assert "wrong-password" not in caplog.text
    assert time.monotonic() - started < 10
    assert 1 <= refused_logins(acl_redis) <= 2  # one refused login (and a reconnect), not a loop


def test_a_wrong_password_stops_the_relay_with_a_clear_error(settings, acl_redis):
    settings.REDIS_URL = url(acl_redis, "wrong-password")
    stock_item_create(sku="ACL-2", name="Waits in the outbox", quantity=1)

    with pytest.raises(RelayError, match="refused this process's credentials") as refused:
        relay_forever(stop=threading.Event())  # not --once: it would otherwise back off and retry forever

    assert "wrong-password" not in str(refused.value)
    assert 1 <= refused_logins(acl_redis) <= 2


def test_the_bus_runs_over_tls_with_the_servers_certificate_named_in_the_url(settings, tls_redis):
    settings.REDIS_URL = f"rediss://bus:{PASSWORD}@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.ca}"

    stock_item_create(sku="TLS-1", name="Over TLS", quantity=2)
    relay_forever(stop=threading.Event(), once=True, grace_seconds=0)
    pump()

    assert stock_view_get(sku="TLS-1").available == 2
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):  # no CA: not trusted
        redis.Redis.from_url(f"rediss://bus:{PASSWORD}@127.0.0.1:{tls_redis.port}/0", socket_timeout=5).ping()
