"""POST -> CONFIRMED latency and burst throughput of the whole system, next to
raw baselines measured in the same run (these machines are noisy, so compare
ratios, not absolute numbers).

    .venv/bin/python bench/order_latency.py [--sequential 50] [--burst 200] [--customers 1]

The burst also prints each process's CPU per order (read from /proc before and after it): the web
server with its workers, each consumer, the relay, the Redis and FerretDB that serve the system, and
this client. Two cores process at most 2000 / (total ms per order) orders a second. It prints how the
machine's cores spent the burst, from /proc/stat: busy, idle, and stolen by the host for another guest
(busy near 1 says the cores bound the rate). And it prints each
consumer group's backlog (entries not yet acked: its lag plus its pending, read with XINFO GROUPS every
quarter second): the most it held, and when it last held any, in seconds from the burst's first POST
next to when the last POST was answered. The group that drains last is what bounds the processed rate.

Runs the web server, relay and consumers as separate processes, like
tests/e2e, against the Redis and FerretDB that `scripts/services start` runs,
shaped as `make run` runs them: one process per consumer (the Procfile) and
gunicorn's workers as gunicorn.conf.py sizes them.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.system import PROCFILE_CONSUMERS, System, make_run_web_env  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0")
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/eventmono")
FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def raw_stream_hop(system: System, samples: int) -> list[float]:
    """XADD on one connection, XREADGROUP BLOCK on another: one bare Redis Streams hop."""
    import redis

    stream = f"{system.stream}-raw"
    writer, reader = (redis.Redis.from_url(REDIS_URL) for _ in range(2))
    reader.xgroup_create(stream, "g", id="$", mkstream=True)
    hops = []
    for _ in range(samples):
        box: dict[str, float] = {}

        def read(box: dict[str, float] = box) -> None:
            reader.xreadgroup("g", "c", {stream: ">"}, count=1, block=5000)
            box["got"] = time.perf_counter()

        thread = threading.Thread(target=read)
        thread.start()
        time.sleep(0.002)
        sent = time.perf_counter()
        writer.xadd(stream, {"data": "x" * 400})
        thread.join(timeout=10)
        hops.append(box["got"] - sent)
    writer.delete(stream)
    return hops


def raw_http(system: System, samples: int) -> list[float]:
    """An authenticated GET of an empty listing: the web stack's own cost."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        status, _, _ = system.request("GET", "/api/orders/?customer_id=nobody")
        assert status == 200
        times.append(time.perf_counter() - start)
    return times


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """Every process: its parent, the CPU seconds it has used (user + system) and its command line."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, cmdline)
    return table


def machine_ticks() -> list[int]:
    """The machine's CPU time so far, in ticks, as /proc/stat's first line counts it: user, nice, system, idle,
    iowait, irq, softirq, steal, ..."""
    return [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def machine_shares(before: list[int], after: list[int]) -> dict[str, float]:
    """How the machine's cores spent the time between two ``machine_ticks()``, as shares: busy (user, nice,
    system, irq, softirq), idle (with iowait), and steal (time the host gave to another guest)."""
    spent = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(spent[:8]) or 1
    busy = spent[0] + spent[1] + spent[2] + spent[5] + spent[6]
    return {
        "busy": round(busy / total, 3),
        "idle": round((spent[3] + spent[4]) / total, 3),
        "steal": round(spent[7] / total, 3),
    }


def cpu_seconds(system: System) -> dict[str, float]:
    """CPU seconds used so far by each of the system's processes (with their children: gunicorn's workers),
    by the Redis and FerretDB that serve it, and by this client."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> float:
        return table.get(pid, (0, 0.0, ""))[1] + sum(tree(child) for child in children.get(pid, []))

    used = {name: tree(proc.pid) for name, proc in system.procs.items()}
    redis_port = REDIS_URL.rsplit(":", 1)[-1].split("/")[0]
    for _ppid, cpu, cmdline in table.values():
        if cmdline.startswith("redis-server") and f":{redis_port}" in cmdline:
            used["redis"] = used.get("redis", 0.0) + cpu
        elif "ferretdb" in cmdline.split(" ")[0]:
            used["ferretdb"] = used.get("ferretdb", 0.0) + cpu
    times = os.times()
    used["client (this bench)"] = times.user + times.system
    return used


class BacklogWatch:
    """Each consumer group's backlog on the stream (lag + pending, XINFO GROUPS), sampled every ``interval``
    seconds in a thread of its own from ``start()`` to ``stop()``: its peak, and when it was last above 0."""

    def __init__(self, system: System, interval: float = 0.25) -> None:
        self.system = system
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.last_busy: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            at = time.perf_counter() - self.started
            for group in self.system.groups():
                backlog = (group["lag"] or 0) + group["pending"]
                name = str(group["name"])
                self.peak[name] = max(self.peak.get(name, 0), backlog)
                if backlog:
                    self.last_busy[name] = round(at, 2)

    def report(self) -> dict[str, dict[str, float]]:
        return {name: {"peak": peak, "last_busy_s": self.last_busy.get(name, 0.0)} for name, peak in self.peak.items()}


def place_and_wait(system: System, body: dict, timeout: float = 30) -> float:
    start = time.perf_counter()
    status, placed, _ = system.request("POST", "/api/orders/", body)
    assert status == 202, placed
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, view, _ = system.request("GET", f"/api/orders/{placed['id']}/")
        if status == 200 and view["status"] in FINAL:
            return time.perf_counter() - start
        time.sleep(0.002)
    raise TimeoutError(placed["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=50, help="orders placed one at a time (latency)")
    parser.add_argument("--burst", type=int, default=200, help="orders placed from 8 threads at once (throughput)")
    parser.add_argument(
        "--customers", type=int, default=1, help="the burst's orders go round this many customers (1: all one's)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        system = System(
            Path(tmp),
            redis_url=REDIS_URL,
            mongodb_uri=MONGODB_URI,
            env=make_run_web_env(),
            consumers=PROCFILE_CONSUMERS,
        )
        try:
            system.start()
            system.request("POST", "/api/inventory/items/", {"sku": "BENCH-1", "name": "bench", "quantity": 10**8})
            system.wait_settled()
            body = {"customer_id": "bench", "lines": [{"sku": "BENCH-1", "quantity": 1}]}

            hop = raw_stream_hop(system, 200)
            http = raw_http(system, 100)
            sequential = [place_and_wait(system, body) for _ in range(args.sequential)]

            cpu_before, ticks_before = cpu_seconds(system), machine_ticks()
            watch = BacklogWatch(system)
            start = time.perf_counter()
            watch.start()
            with ThreadPoolExecutor(max_workers=8) as pool:
                bodies = [{**body, "customer_id": f"bench-{i % args.customers}"} for i in range(args.burst)]
                list(pool.map(lambda b: system.request("POST", "/api/orders/", b), bodies))
            accepted = time.perf_counter() - start
            system.wait_settled(timeout=300, quiet_for=0.3)
            settled = time.perf_counter() - start - 0.3
            watch.stop()
            cpu_after, ticks_after = cpu_seconds(system), machine_ticks()
        finally:
            system.stop()
            system.cleanup()

    # What each process spent on the burst, most first: the machine's cores bound the rate at
    # cores / (total CPU per order).
    spent = {name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / args.burst for name in cpu_after}
    per_order = {name: round(used, 2) for name, used in sorted(spent.items(), key=lambda item: -item[1])}
    per_order["total"] = round(sum(per_order.values()), 2)
    report = {
        "raw_redis_hop_ms": {"p50": ms(statistics.median(hop)), "p99": ms(pct(hop, 0.99))},
        "raw_http_get_ms": {"p50": ms(statistics.median(http)), "p99": ms(pct(http, 0.99))},
        "post_to_confirmed_ms": {"p50": ms(statistics.median(sequential)), "p99": ms(pct(sequential, 0.99))},
        "ratio_p50_to_raw_redis_hop": round(statistics.median(sequential) / statistics.median(hop), 1),
        "ratio_p50_to_raw_http_get": round(statistics.median(sequential) / statistics.median(http), 1),
        "burst": {
            "orders": args.burst,
            "accepted_per_s": round(args.burst / accepted, 1),
            "processed_per_s": round(args.burst / settled, 1),
            "cpu_ms_per_order": per_order,
            # The machine's cores during the burst: busy near 1, the cores bound the rate.
            "machine_cpu_share": machine_shares(ticks_before, ticks_after),
            # Seconds from the first POST; the group whose backlog empties last bounds processed_per_s.
            "last_post_answered_s": round(accepted, 2),
            "backlog": watch.report(),
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
