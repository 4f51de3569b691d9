from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.e2e.system import System

# Measurements the end-to-end tests make, shown at the end of the run.
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORTS:
        terminalreporter.write_line(line)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path, redis_url=settings.REDIS_URL, mongodb_uri=settings.MONGODB_URI)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        running.cleanup()
