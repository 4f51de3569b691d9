"""scripts/services, on Redis servers of each test's own (their own ports and state directory): a start returns
once the server answers commands.

Redis opens its port before it has loaded its AOF, and until then answers every command with LOADING. A start
that waited only for the port handed back a server that refused its first command. On the local cluster that
broke a restart: asked whether the cluster existed, the first master answered LOADING, so the script ran
`redis-cli --cluster create` on nodes that already formed one, and that failed (seen in `make test`, whose
cluster tests then all errored).
"""

import itertools
import os
import subprocess
from pathlib import Path

from tests.e2e.system import (
    AOF_FILL,
    AOF_WRITES,
    CLUSTER_BUS_OFFSET,
    first_outgoing_port,
    run_services,
    server_ports,
)


def cli(port: int, *args: str) -> str:
    """What redis-cli prints, which is an error's text too (it never retries, unlike redis-py on LOADING)."""
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()


def script_env(state: Path, **ports: int) -> dict[str, str]:
    env = {**os.environ, "SERVICES_DIR": str(state), **{name: str(port) for name, port in ports.items()}}
    env.pop("REDIS_URL", None)  # the suite's Redis would make the script leave "redis" alone
    return env


def test_a_restarted_redis_answers_its_first_command_as_soon_as_the_start_returns(tmp_path):
    port = server_ports()
    env = script_env(tmp_path, REDIS_PORT=port)
    run_services("start", "redis", env=env)
    try:
        cli(port, "eval", AOF_FILL, "0", str(AOF_WRITES), "k")
        run_services("stop", "redis", env=env)
        run_services("start", "redis", env=env)
        assert cli(port, "ping") == "PONG"
        assert cli(port, "dbsize") == str(AOF_WRITES)
    finally:
        run_services("stop", "redis", env=env)


def test_a_restarted_cluster_is_ok_on_every_master_as_soon_as_the_start_returns(tmp_path):
    """Masters restarted from their nodes.conf reach state ok one by one. A start that asked only the first handed
    back a cluster whose others answered CLUSTERDOWN (seen in `make test`: a test's first XADDs to two partitions
    failed with "The cluster is down"; by hand, 3 restarts of 3 left a master in state fail as the start returned)."""
    first = server_ports(3, cluster_bus=True)
    env = script_env(tmp_path, REDIS_CLUSTER_PORT=first)
    run_services("start", "redis-cluster", env=env)
    try:
        for _ in range(3):
            run_services("stop", "redis-cluster", env=env)
            run_services("start", "redis-cluster", env=env)
            states = [cli(port, "cluster", "info").splitlines()[0] for port in range(first, first + 3)]
            assert states == ["cluster_state:ok"] * 3
    finally:
        run_services("stop", "redis-cluster", env=env)


def test_a_restarted_cluster_whose_first_master_loads_a_large_aof_comes_back_as_it_was(tmp_path):
    first = server_ports(3, cluster_bus=True)
    env = script_env(tmp_path, REDIS_CLUSTER_PORT=first)
    run_services("start", "redis-cluster", env=env)
    try:
        # Keys of a slot the first master serves (it answers MOVED for the others): its AOF grows large.
        tag = next(tag for tag in (f"{{t{i}}}" for i in itertools.count()) if cli(first, "set", tag, "v") == "OK")
        cli(first, "eval", AOF_FILL, "0", str(AOF_WRITES), tag)
        node_id = cli(first, "cluster", "myid")
        run_services("stop", "redis-cluster", env=env)
        run_services("start", "redis-cluster", env=env)
        assert cli(first, "cluster", "myid") == node_id
        assert "cluster_state:ok" in cli(first, "cluster", "info")
        assert cli(first, "dbsize") == str(AOF_WRITES + 1)
    finally:
        run_services("stop", "redis-cluster", env=env)


def test_the_tests_give_servers_ports_no_outgoing_connection_can_hold():
    """In CI a cluster node of the test above aborted: its bus port, from the kernel's range for outgoing
    connections, was taken though no server listened on it (most likely the local end of some connection)."""
    first_outgoing = first_outgoing_port()
    clusters = [server_ports(3, cluster_bus=True) for _ in range(20)]
    singles = [server_ports() for _ in range(20)]
    ports = [port + bus for first in clusters for port in range(first, first + 3) for bus in (0, CLUSTER_BUS_OFFSET)]
    ports += singles
    assert len(set(ports)) == len(ports) == 140
    assert all(1024 <= port < first_outgoing for port in ports)
