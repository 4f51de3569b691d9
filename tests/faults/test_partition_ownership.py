"""Per-aggregate order across P partitions and N consumer processes, while processes are killed, added
and paused past their lease: every aggregate's events are applied in version order, each once."""

import random
import signal
import time

from eventing.contract.envelope import Envelope
from eventing.transport.streams import stream_for
from inventory.events import StockAdded
from tests.e2e.system import wait_for
from tests.faults.conftest import report

PARTITIONS = 4
LEASE_TTL_MS = 1500
SKUS = [f"SEQ-{n}" for n in range(6)]
VERSIONS = 50  # events per sku


def publish(system, wave: range, rng: random.Random) -> None:
    """Each sku's events of ``wave``, to its partition (as the relay routes them), skus interleaved."""
    for version in wave:
        for sku in rng.sample(SKUS, len(SKUS)):
            envelope = Envelope.wrap(
                StockAdded(sku=sku, name=sku, quantity=1, on_hand=version, reserved=0), aggregate_version=version
            )
            stream = stream_for(sku, stream=system.stream, partitions=PARTITIONS)
            system.redis.xadd(stream, {"type": envelope.type, "data": envelope.to_json()})


def state(system) -> tuple[dict[str, int], list[str], int]:
    """(last version applied per sku, violations, inbox rows) from the system's database (SQLite or PostgreSQL)."""
    rows = [(row["pk"], row["fields"]["name"]) for row in system.dumpdata("orders.CatalogItem")]
    inbox = sum(row["fields"]["consumer"] == "sequencer" for row in system.dumpdata("eventing.ProcessedEvent"))
    last = {sku.removeprefix("last:"): int(name) for sku, name in rows if sku.startswith("last:")}
    return last, [name for sku, name in rows if sku.startswith("violation:")], inbox


def test_events_of_an_aggregate_stay_in_order_while_processes_die_join_and_pause(make_system):
    rng = random.Random(20261130)
    system = make_system(
        consumers={"inventory": 0},  # only the processes this test starts
        env={
            "EVENTING_PARTITIONS": str(PARTITIONS),
            "EVENTING_LEASE_TTL_MS": str(LEASE_TTL_MS),
            "EVENTING_EXTRA_HANDLER_MODULES": "tests.faults.ordering_handlers",
            "EVENTING_BLOCK_MS": "100",
            "EVENTING_COMMIT_EVERY": "5",
        },
    )
    running = [system.start_consumer("sequencer", i) for i in range(2)]
    events = {"killed": [], "paused": [], "added": []}

    publish(system, range(1, 11), rng)
    time.sleep(1)
    running.append(system.start_consumer("sequencer", 2))  # one joins
    events["added"].append(running[-1])
    publish(system, range(11, 21), rng)
    time.sleep(0.5)
    victim = running.pop(0)
    system.kill(victim)  # one dies holding its partitions
    events["killed"].append(victim)
    publish(system, range(21, 31), rng)
    paused = running[0]
    system.procs[paused].send_signal(signal.SIGSTOP)  # one freezes past its lease, then wakes up
    events["paused"].append(paused)
    publish(system, range(31, 41), rng)
    time.sleep(2 * LEASE_TTL_MS / 1000)
    system.procs[paused].send_signal(signal.SIGCONT)
    running.append(system.start_consumer("sequencer", 3))
    events["added"].append(running[-1])
    publish(system, range(41, VERSIONS + 1), rng)

    wait_for(
        lambda: state(system)[0] == dict.fromkeys(SKUS, VERSIONS), timeout=120, what="every sku at its last version"
    )
    last, violations, inbox = state(system)
    report("F11 partition ownership", partitions=PARTITIONS, processes_started=4, **events,
           events=len(SKUS) * VERSIONS, applied=inbox, violations=len(violations))  # fmt: skip
    assert violations == []
    assert inbox == len(SKUS) * VERSIONS  # each once (the inbox also refuses a second application)
    assert all(system.procs[name].poll() is None for name in running)
