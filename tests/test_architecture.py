"""The apps talk through events only: no domain module reaches Redis or
MongoDB drivers directly, and an app imports nothing of another app but its
published event contract (`events.py`)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_APPS = ["orders", "inventory"]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def domain_modules() -> list[Path]:
    return [p for app in DOMAIN_APPS for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_redis_or_pymongo(path):
    assert not {name for name in imports(path) if name.split(".")[0] in ("redis", "pymongo")}


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_apps_import_only_each_others_events(path):
    app = path.relative_to(ROOT).parts[0]
    for name in imports(path):
        top = name.split(".")[0]
        if top in DOMAIN_APPS and top != app:
            assert name == f"{top}.events", f"{path.relative_to(ROOT)} imports {name}"
