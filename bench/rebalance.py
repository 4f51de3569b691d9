"""How long a rebalance takes: 8 partitions, 2 members of one group, on the local Redis, for three lease TTLs.

    .venv/bin/python bench/rebalance.py

For each TTL: both members settle; one stops renewing (a crash) and the time until the other holds every
partition is measured; the crashed one comes back and the time until it has its share is measured (a join);
then it stops cleanly and hands everything back. Keys of its own, deleted at the end.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")  # a local development run

import django  # noqa: E402

django.setup()

from eventing.transport.client import get_redis  # noqa: E402
from eventing.transport.leases import PartitionLeases, lease_key, members_key, token_key  # noqa: E402


def main() -> None:
    client = get_redis()
    for ttl in (300, 1000, 3000):
        base = f"bench-rebalance-{os.getpid()}-{ttl}"
        partitions = [f"{{{base}:p{i}}}" for i in range(8)]

        def member(owner: str, base: str = base, partitions: list[str] = partitions, ttl: int = ttl) -> PartitionLeases:
            return PartitionLeases(client=client, group="g", base=base, partitions=partitions, owner=owner, ttl_ms=ttl)

        a, b = member("a"), member("b")
        for _ in range(3):
            a.rebalance()
            b.rebalance()
        started = time.monotonic()  # b crashes: it renews nothing from here on
        while len(a.held) < len(partitions):
            time.sleep(ttl / 3000)
            a.rebalance()
        crash = time.monotonic() - started
        b = member("b")
        started = time.monotonic()
        b.rebalance()
        while len(b.held) < len(partitions) // 2:
            time.sleep(ttl / 3000)
            a.rebalance()
            b.rebalance()
        join = time.monotonic() - started
        started = time.monotonic()
        b.release_all()
        a.rebalance()
        stop = time.monotonic() - started
        print(
            f"TTL {ttl} ms: a crash taken over in {crash * 1000:.0f} ms ({crash * 1000 / ttl:.2f} TTL), a join settled"
            f" in {join * 1000:.0f} ms, a clean stop handed back in {stop * 1000:.0f} ms"
        )
        for partition in partitions:
            client.delete(lease_key(stream=partition, group="g"), token_key(stream=partition, group="g"))
        client.delete(members_key(group="g", base=base))


if __name__ == "__main__":
    main()
