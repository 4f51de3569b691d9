"""The layering, enforced.

- The apps talk through events only: no domain module reaches Redis or MongoDB
  drivers directly, and an app imports nothing of another app but its published
  event contract (`events.py`).
- `eventing/` is layered: contract <- transport <- readside / consumer <- the app
  root (apis, admin, selectors, services, catalog, middleware, management). A
  layer imports only the layers below it; readside and consumer do not import
  each other. `eventing.models` sits just above the contract (Django wants it
  at the root, and it needs only the contract's reason labels), and so does
  `eventing.telemetry` (metrics and tracing instruments, used by the layers above).
- `eventing` never imports the project's `config`, nor a domain app; `core`
  imports neither `eventing`, the apps nor `config`.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_APPS = ["orders", "inventory"]

# Layer of each part of eventing, and what each layer may import from eventing.
LAYERS = {
    "eventing.contract": 0,
    "eventing.models": 1,
    "eventing.telemetry": 1,
    "eventing.transport": 2,
    "eventing.readside": 3,
    "eventing.consumer": 3,
}
ROOT_LAYER = 4  # every other eventing module: the app root


def imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from eventing import models` names the module eventing.models.
            names |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "eventing"}
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def part_of(module: str) -> str:
    """The layered part a module of eventing belongs to (its package, or the root)."""
    for part in LAYERS:
        if module == part or module.startswith(f"{part}."):
            return part
    return "eventing"


def layer_of(module: str) -> int:
    return LAYERS.get(part_of(module), ROOT_LAYER)


def layering_violations(module: str, imported: set[str]) -> list[str]:
    """Why ``module`` (of eventing) may not import what it imports."""
    problems = []
    for name in sorted(imported):
        top = name.split(".")[0]
        if top == "config" or top in DOMAIN_APPS:
            problems.append(f"{module} imports {name}: eventing never imports the project or its apps")
            continue
        if top != "eventing" or name == "eventing":
            continue
        mine, theirs = part_of(module), part_of(name)
        if mine == theirs:
            continue
        if layer_of(name) >= layer_of(module):
            problems.append(f"{module} ({mine}) imports {name} ({theirs}): not a layer below it")
    return problems


def python_files(*tops: str) -> list[Path]:
    return [p for top in tops for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts]


def domain_modules() -> list[Path]:
    return python_files(*DOMAIN_APPS)


def test_each_layered_part_of_eventing_is_a_package():
    for part in LAYERS:
        path = ROOT.joinpath(*part.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), part


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_redis_or_pymongo(path):
    assert not {name for name in imports(path.read_text()) if name.split(".")[0] in ("redis", "pymongo")}


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_apps_import_only_each_others_events(path):
    app = path.relative_to(ROOT).parts[0]
    for name in imports(path.read_text()):
        top = name.split(".")[0]
        if top in DOMAIN_APPS and top != app:
            assert name == f"{top}.events", f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("path", python_files("eventing"), ids=lambda p: str(p.relative_to(ROOT)))
def test_eventing_imports_only_layers_below(path):
    assert layering_violations(module_name(path), imports(path.read_text())) == []


@pytest.mark.parametrize("path", python_files("core"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_project_code(path):
    assert not {
        name for name in imports(path.read_text()) if name.split(".")[0] in ("eventing", "config", *DOMAIN_APPS)
    }


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("eventing.contract.events", "from eventing.transport.relay import publish_after_commit"),
        ("eventing.contract.schemas", "from eventing.contract import consumers\nfrom eventing.consumer import runner"),
        ("eventing.transport.outbox", "from eventing.readside.mongo import RowChange"),
        ("eventing.readside.replay", "from eventing.consumer.runner import StreamConsumer"),
        ("eventing.consumer.runner", "import eventing.readside.event_log"),
        ("eventing.models", "from eventing.transport.streams import retry_stream"),
        ("eventing.consumer.group", "from eventing import selectors"),
        ("eventing.admin", "from config.settings import DEBUG"),
        ("eventing.readside.projections", "def f():\n    from orders.models import Order"),
    ],
)
def test_the_check_catches_an_upward_or_sideways_import(module, source):
    assert layering_violations(module, imports(source))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("eventing.transport.outbox", "from eventing.contract.envelope import Envelope\nfrom eventing.models import X"),
        ("eventing.consumer.runner", "from eventing.transport.relay import publishing_batch"),
        ("eventing.admin", "from eventing.readside.event_log import EventRecord\nfrom core.api import Pagination"),
    ],
)
def test_the_check_allows_imports_from_below(module, source):
    assert layering_violations(module, imports(source)) == []
