from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.e2e.system import System


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path, redis_url=settings.REDIS_URL, mongodb_uri=settings.MONGODB_URI)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        running.cleanup()
