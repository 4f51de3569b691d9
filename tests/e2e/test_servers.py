"""The Redis servers the fault tests start, kill and restart (tests/e2e/system.py): a start returns once the server
answers commands, as scripts/services' does (tests/test_services_script.py).

Redis opens its port before it has replayed its AOF, and until then answers every command with LOADING. A start
that waited only for the port handed back a server that refused its first command: in `make test`, F3's XLEN right
after restarting its Redis raised BusyLoadingError.
"""

import signal

import redis

from tests.e2e.system import AOF_FILL, AOF_WRITES, RedisServer


def test_a_redis_killed_and_restarted_from_a_large_aof_answers_its_first_command(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        # No retry: redis-py would retry a LOADING answer, which is what the start must make needless.
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        client.eval(AOF_FILL, 0, str(AOF_WRITES), "k")
        server.kill(signal.SIGKILL)
        server.start()
        assert client.dbsize() == AOF_WRITES
    finally:
        server.stop()
