"""The suite's settings: the project's one settings file, in its local development mode.

The suite runs with DEBUG, as ``make run`` does: production refuses to start without a real secret key
and serves only collected static files. ``tests/test_security.py`` checks the production mode itself.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "true")

from config.settings import *  # noqa: E402, F403
