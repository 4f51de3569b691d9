#!/usr/bin/env python
"""Check the admin's dead-letter console in a real browser, and take the screenshots for the docs.

What a new operator would do, end to end, on scratch state of its own (a temporary SQLite database, a
stream, a MongoDB database and a port of its own; the developer's db.sqlite3 and stream are never
touched):

1. migrate, create a superuser, start the web server and the inventory, orders and projections consumers;
2. put four bad entries on the stream (undecodable JSON, an unknown event type, an ORDER_CREATED
   missing a field, a STOCK_REJECTED for an order that does not exist, whose handler fails for good)
   and wait until each consumer group that reads them has dead-lettered them (9 dead letters);
3. in headless Chromium (Debian's chromium and chromium-driver): log in, screenshot the list and one
   dead letter's page, Retry that one from its page (it must come back to its own group only), Discard
   another from the list (first without a reason, which must be refused, then with one), and check the
   messages, the statuses and the audit trail.

It exits 1 with the failed check on stderr; on failure the scratch directory (server, consumer and
chromedriver logs, failure.png) is kept and named. Needs Redis and FerretDB (`scripts/services start`)
and `apt-get install -y chromium chromium-driver`. scripts/admin_screenshots.py imports this scratch
system and walk-through and goes on to the operator's admin, bus status, editing and Swagger UI.

    .venv/bin/python scripts/dlq_screenshots.py [--out-dir docs/images] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from pymongo import MongoClient

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - a set-up problem, reported plainly
    sys.exit("selenium is missing: .venv/bin/pip install -r requirements.txt")

logger = logging.getLogger("dlq_screenshots")

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
]
WINDOW = (1400, 900)
CONSUMERS = ("inventory", "orders", "projections")
DISCARD_REASON = "Malformed test entry injected by scripts/dlq_screenshots.py; there is nothing to recover."
T = TypeVar("T")


class CheckFailed(Exception):
    """One of the checks did not see what it expected."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail the check after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- Scratch state and processes ------------------------------------------------------------------


@dataclass
class Scratch:
    """Everything this run owns, so that it can be removed at the end."""

    tmpdir: Path
    token: str
    port: int
    username: str
    password: str
    redis_url: str
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return f"dlq-shots-{self.token}"

    @property
    def mongo_db(self) -> str:
        return f"dlq_shots_{self.token}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:27018/{self.mongo_db}"

    @property
    def database(self) -> Path:
        return self.tmpdir / "db.sqlite3"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "EVENTING_", "DATABASE_", "MONGODB_", "CACHE_", "DEMO_"))
        }
        env.update(
            {
                # Development settings: the dev secret key, plain HTTP (no SSL redirect, no secure-only cookies)
                # and static files served by runserver; DJANGO_DEBUG defaults to off.
                "DJANGO_DEBUG": "true",
                "DATABASE_URL": f"sqlite:///{self.database}",
                "EVENTING_STREAM": self.stream,
                "MONGODB_URI": self.mongo_uri,
                "REDIS_URL": self.redis_url,
                # The API's throttle counts too, under keys the clean-up finds (and no other run shares).
                "CACHE_URL": self.redis_url,
                "CACHE_KEY_PREFIX": self.stream,
                "DJANGO_SUPERUSER_USERNAME": self.username,
                "DJANGO_SUPERUSER_PASSWORD": self.password,
                "DJANGO_SUPERUSER_EMAIL": f"{self.username}@example.com",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(scratch: Scratch, *args: str, timeout: float = 120) -> str:
    """Run a management command on the scratch state; its stdout, or CheckFailed with its stderr."""
    done = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=scratch.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise CheckFailed(f"manage.py {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def start(scratch: Scratch, name: str, *args: str) -> None:
    log = (scratch.tmpdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=scratch.env(), stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    scratch.processes.append((name, process))
    logger.info("started %s (pid %d), log in %s", name, process.pid, scratch.tmpdir / f"{name}.log")


def stop_all(scratch: Scratch) -> None:
    """SIGTERM each process it started (consumers finish their batch and exit), then SIGKILL stragglers."""
    for _, process in scratch.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for name, process in scratch.processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
            process.kill()
            process.wait(timeout=5)
    scratch.processes.clear()


def assert_running(scratch: Scratch) -> None:
    for name, process in scratch.processes:
        check(
            process.poll() is None,
            f"{name} exited with {process.returncode}; see {scratch.tmpdir / f'{name}.log'}",
        )


def drop_scratch_data(scratch: Scratch) -> None:
    """The scratch streams (main, retry, dead-letter) and bookkeeping keys, and the scratch MongoDB database."""
    try:
        client = redis.Redis.from_url(scratch.redis_url)
        keys = list(client.scan_iter(match=f"*{scratch.stream}*", count=1000))
        if keys:
            client.delete(*keys)
        logger.info("deleted %d Redis key(s) of %s", len(keys), scratch.stream)
    except redis.RedisError as exc:
        logger.warning("could not delete the Redis keys of %s: %s", scratch.stream, exc)
    try:
        with MongoClient(scratch.mongo_uri, serverSelectionTimeoutMS=5000) as mongo:
            mongo.drop_database(scratch.mongo_db)
        logger.info("dropped MongoDB database %s", scratch.mongo_db)
    except Exception as exc:  # noqa: BLE001 - clean-up is best effort; the run's verdict stands
        logger.warning("could not drop MongoDB database %s: %s", scratch.mongo_db, exc)


def ensure_services(scratch: Scratch) -> None:
    """Redis and MongoDB (FerretDB) must answer; `scripts/services start` is tried once when they do not."""

    def reachable() -> str:
        problems = []
        try:
            redis.Redis.from_url(scratch.redis_url, socket_timeout=2).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {scratch.redis_url}: {exc}")
        try:
            with MongoClient(scratch.mongo_uri, serverSelectionTimeoutMS=3000) as mongo:
                mongo.admin.command("ping")
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is reported the same way
            problems.append(f"MongoDB at {scratch.mongo_uri}: {exc}")
        return "; ".join(problems)

    if not reachable():
        return
    logger.info("Redis or MongoDB unreachable; running scripts/services start")
    subprocess.run([str(ROOT / "scripts" / "services"), "start"], cwd=ROOT, check=False)
    problems = reachable()
    check(not problems, f"backing services unreachable (try scripts/services start): {problems}")


def wait_for_server(scratch: Scratch) -> None:
    def up() -> bool:
        assert_running(scratch)
        try:
            with urllib.request.urlopen(f"{scratch.base_url}/admin/login/", timeout=2) as response:  # noqa: S310
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_for(f"the web server on {scratch.base_url}", up, timeout=60)


# -- Bad entries ----------------------------------------------------------------------------------


def envelope(event_type: str, data: dict[str, Any], *, aggregate_type: str, aggregate_id: str) -> dict[str, Any]:
    """An envelope as eventing.events.Envelope.to_dict() makes it."""
    event_id = str(uuid.uuid4())
    return {
        "id": event_id,
        "type": event_type,
        "version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "aggregate_version": 1,
        "data": data,
    }


def entry(doc: dict[str, Any]) -> dict[str, str]:
    """The stream entry's fields, as the relay publishes them (type, data as Envelope.to_json(), timestamp)."""
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return {"type": doc["type"], "data": data, "timestamp": doc["occurred_at"]}


@dataclass(frozen=True)
class BadEntry:
    label: str
    fields: dict[str, str]
    reason: str
    event_type: str
    groups: frozenset[str]
    envelope: dict[str, Any] | None = None


def bad_entries() -> list[BadEntry]:
    order_id = str(uuid.uuid4())
    created = envelope(
        "ORDER_CREATED",
        {"order_id": order_id, "customer_id": "alice", "lines": [{"sku": "LAMP-1", "quantity": 2}]},
        aggregate_type="order",
        aggregate_id=order_id,
    )  # placed_at is missing
    unknown = envelope(
        "PAYMENT_CAPTURED",
        {"payment_id": "pay-1", "order_id": order_id, "amount_cents": 4200},
        aggregate_type="payment",
        aggregate_id="pay-1",
    )
    rejected = envelope(
        "STOCK_REJECTED",
        {
            "order_id": order_id,
            "reason": "insufficient stock: LAMP-1 short by 1",
            "lines": [{"sku": "LAMP-1", "requested": 2, "available": 1, "shortfall": 1}],
        },
        aggregate_type="reservation",
        aggregate_id=order_id,
    )
    undecodable = entry(created)
    undecodable["data"] = undecodable["data"][:90]  # cut short, as by a broken producer
    return [
        BadEntry("undecodable JSON", undecodable, "undecodable", "ORDER_CREATED", frozenset(CONSUMERS)),
        BadEntry("unknown type", entry(unknown), "unknown type", "PAYMENT_CAPTURED", frozenset(CONSUMERS)),
        # Only the groups with a handler for ORDER_CREATED decode its data; the orders group acks it unread.
        BadEntry(
            "ORDER_CREATED missing placed_at",
            entry(created),
            "invalid event",
            "ORDER_CREATED",
            frozenset({"inventory", "projections"}),
        ),
        # A valid answer about an order this database never had: the orders group's handler raises
        # OrderNotFound, declared permanent, so it is dead-lettered at once with its traceback. The
        # projections group logs it fine; the inventory group has no handler for it.
        BadEntry(
            "STOCK_REJECTED for an unknown order",
            entry(rejected),
            "permanent error",
            "STOCK_REJECTED",
            frozenset({"orders"}),
            rejected,
        ),
    ]


def dead_letters(scratch: Scratch) -> list[dict[str, Any]]:
    out = manage(scratch, "dlq", "list", "--json", "--limit", "500")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def audit_rows(scratch: Scratch, dead_letter_id: int) -> list[tuple[str, str, str, str]]:
    with closing(sqlite3.connect(f"file:{scratch.database}?mode=ro", uri=True)) as db:
        return db.execute(
            "SELECT kind, actor, reason, result FROM eventing_deadletteraction WHERE dead_letter_id = ? ORDER BY id",
            (dead_letter_id,),
        ).fetchall()


def status_of(scratch: Scratch, dead_letter_id: int) -> str:
    with closing(sqlite3.connect(f"file:{scratch.database}?mode=ro", uri=True)) as db:
        (status,) = db.execute("SELECT status FROM eventing_deadletter WHERE id = ?", (dead_letter_id,)).fetchone()
    return str(status)


# -- Browser --------------------------------------------------------------------------------------


def start_browser(scratch: Scratch) -> WebDriver:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        check(Path(path).is_file(), f"{path} is missing: apt-get install -y {package}")
    options = Options()
    options.binary_location = CHROMIUM  # Debian's, never one Selenium Manager would download
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={scratch.tmpdir / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # A driver path in the Service means Selenium Manager is never run.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(scratch.tmpdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    set_viewport(driver, *WINDOW)
    return driver


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """The page's exact size (a headless window's viewport is smaller than the window by its frame)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def text_of(driver: WebDriver, selector: str) -> str:
    return " ".join(element.text for element in driver.find_elements(By.CSS_SELECTOR, selector))


def messages(driver: WebDriver) -> list[tuple[str, str]]:
    """The admin's messages on the page: (level class, text)."""
    return [
        ((element.get_attribute("class") or "").strip(), element.text.strip())
        for element in driver.find_elements(By.CSS_SELECTOR, "ul.messagelist li")
    ]


def readonly_field(driver: WebDriver, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f".field-{name} .readonly").text.strip()


def audit_trail(driver: WebDriver) -> list[dict[str, str]]:
    """The audit-trail inline on a dead letter's page, one dict per row."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#actions-group tbody tr.form-row")
    return [
        {
            column: row.find_element(By.CSS_SELECTOR, f"td.field-{column}").text.strip()
            for column in ("at", "kind", "actor", "reason", "result", "edit")
        }
        for row in rows
    ]


def submit(driver: WebDriver, button: WebElement) -> None:
    """Click a submit button and wait for the next page (the old one going stale)."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 15).until(lambda d: _is_stale(page))


def _is_stale(element: WebElement) -> bool:
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def full_page_screenshot(driver: WebDriver, path: Path, *, width: int, max_height: int = 3000) -> None:
    """Size the viewport to the whole page (up to ``max_height``), save the screenshot, restore the size."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    set_viewport(driver, width, min(max(int(height), WINDOW[1]), max_height))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    set_viewport(driver, *WINDOW)


# -- The walk-through -----------------------------------------------------------------------------


def log_in(driver: WebDriver, scratch: Scratch, username: str | None = None, password: str | None = None) -> None:
    """Sign in to the admin, as the scratch superuser unless another user is named."""
    username, password = username or scratch.username, password or scratch.password
    driver.get(f"{scratch.base_url}/admin/login/?next=/admin/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]"))
    check(
        driver.current_url.rstrip("/").endswith("/admin")
        and username.lower() in text_of(driver, "#user-tools").lower(),  # the admin shows it in capitals
        f"login as {username} failed: at {driver.current_url}, page says {text_of(driver, '.errornote')!r}",
    )
    # Fold the admin's app list away, as its « button does (it remembers that in localStorage), so the
    # screenshots are about the dead letters.
    driver.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    logger.info("logged in as %s", username)


def log_out(driver: WebDriver, scratch: Scratch) -> None:
    """Sign out with the admin's "Log out" button (a POST since Django 5)."""
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#logout-form [type=submit]"))
    check("Logged out" in driver.title, f"after Log out the page is {driver.title!r}")


def check_list(driver: WebDriver, scratch: Scratch, expected: int, out_dir: Path) -> None:
    driver.get(f"{scratch.base_url}/admin/eventing/deadletter/")
    rows = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    check(len(rows) == expected, f"the list shows {len(rows)} dead letters, expected {expected}")
    filters = text_of(driver, "#changelist-filter")
    for heading in ("consumer group", "event type", "status", "reason", "created at"):
        check(f"By {heading}" in filters, f"the filter sidebar has no 'By {heading}': {filters!r}")
    actions = [option.text for option in Select(driver.find_element(By.NAME, "action")).options]
    check(
        "Retry selected dead letters" in actions and "Discard selected dead letters" in actions,
        f"the action menu is {actions}",
    )
    check(not any("Delete" in action for action in actions), f"the action menu offers a delete: {actions}")
    statuses = {row.find_element(By.CSS_SELECTOR, "td.field-status").text for row in rows}
    check(statuses == {"pending a decision"}, f"statuses in the list: {statuses}")
    driver.save_screenshot(str(out_dir / "dlq-list.png"))
    logger.info("list: %d rows, filters %s, actions %s -> %s", len(rows), "shown", actions, out_dir / "dlq-list.png")


def check_detail_and_retry(
    driver: WebDriver, scratch: Scratch, target: dict[str, Any], sent: dict[str, Any], out_dir: Path
) -> None:
    """``target`` is the orders group's dead letter of the STOCK_REJECTED envelope ``sent``."""
    url = f"{scratch.base_url}/admin/eventing/deadletter/{target['id']}/change/"
    driver.get(url)
    check(readonly_field(driver, "status") == "pending a decision", "the detail page does not say pending")
    for name, value in (("event_id", sent["id"]), ("correlation_id", sent["correlation_id"])):
        shown_value = readonly_field(driver, name)
        check(shown_value == value, f"the page shows {name} {shown_value!r}, the envelope had {value!r}")
    handler = readonly_field(driver, "handler")
    check(handler.endswith("reject_order"), f"the page shows handler {handler!r}")
    payload = readonly_field(driver, "payload_pretty")
    check(
        '"STOCK_REJECTED"' in payload and f'"order_id": "{sent["data"]["order_id"]}"' in payload,
        f"the payload is not shown decoded: {payload}",
    )
    error = f"{readonly_field(driver, 'error_class')}: {readonly_field(driver, 'error_message')}"
    check(
        error == f"orders.services.OrderNotFound: Order {sent['data']['order_id']} does not exist.",
        f"the error shown is {error!r}",
    )
    traceback = readonly_field(driver, "traceback_pretty")
    check(
        traceback.startswith("Traceback (most recent call last):") and "OrderNotFound" in traceback,
        f"the traceback shown is {traceback!r}",
    )
    retry = driver.find_elements(By.CSS_SELECTOR, ".object-tools input[type=submit][value='Retry']")
    discard = driver.find_elements(By.CSS_SELECTOR, ".object-tools input[type=submit][value='Discard…']")
    check(len(retry) == 1 and len(discard) == 1, "a pending dead letter's page lacks the Retry or Discard button")
    full_page_screenshot(driver, out_dir / "dlq-detail.png", width=WINDOW[0])
    logger.info("detail #%s: error %r -> %s", target["id"], error, out_dir / "dlq-detail.png")

    submit(driver, driver.find_element(By.CSS_SELECTOR, ".object-tools input[type=submit][value='Retry']"))
    check(driver.current_url == url, f"Retry from the page went to {driver.current_url}, not back to {url}")
    shown = messages(driver)
    check(
        shown == [("success", "Re-delivered 1 dead letter(s); skipped 0.")],
        f"after Retry the messages are {shown}",
    )
    status = readonly_field(driver, "status")
    check(status == "retried", f"after Retry the page says status {status!r}")
    check(
        not driver.find_elements(By.CSS_SELECTOR, ".object-tools input[type=submit]"),
        "a retried dead letter's page still offers Retry or Discard",
    )
    trail = audit_trail(driver)
    check(
        len(trail) == 1
        and trail[0]["kind"] == "Retry"
        and trail[0]["actor"] == scratch.username
        and f"re-delivered to {target['consumer_group']} as {scratch.stream}:retry:{target['consumer_group']}"
        in trail[0]["result"],
        f"the audit trail after Retry is {trail}",
    )
    check(status_of(scratch, target["id"]) == "RETRIED", "the database does not say RETRIED")
    logger.info("retry #%s: message %r, status %r, audit %s", target["id"], shown[0][1], status, trail)

    # The re-delivery goes to that group alone; the entry is still malformed, so it is dead-lettered again.
    retry_stream = f"{scratch.stream}:retry:{target['consumer_group']}"
    again = wait_for(
        f"the retried entry to come back from {retry_stream}",
        lambda: [d for d in dead_letters(scratch) if d["stream"].startswith(f"{scratch.stream}:retry:")],
        timeout=20,
    )
    check(
        [(d["consumer_group"], d["stream"], d["reason"]) for d in again]
        == [(target["consumer_group"], retry_stream, target["reason"])],
        f"the retried entry came back as {again}",
    )
    logger.info(
        "retry #%s: re-delivered to %s only, dead-lettered again as #%s", target["id"], retry_stream, again[0]["id"]
    )


def check_discard(driver: WebDriver, scratch: Scratch, target: dict[str, Any]) -> None:
    list_url = f"{scratch.base_url}/admin/eventing/deadletter/"
    driver.get(list_url)
    driver.find_element(By.CSS_SELECTOR, f"input.action-select[value='{target['id']}']").click()
    Select(driver.find_element(By.NAME, "action")).select_by_visible_text("Discard selected dead letters")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "button[name=index]"))
    check("Discard dead letters" in driver.title, f"the Discard action opened {driver.title!r}")
    listed = text_of(driver, "ul.dead-letters")
    check(f"#{target['id']}" in listed and listed.count("#") == 1, f"the confirmation page lists {listed!r}")

    # 1. No reason: the browser refuses to send the form (the field is required) and nothing changes.
    reason = driver.find_element(By.ID, "id_reason")
    confirm_url = driver.current_url
    driver.find_element(By.CSS_SELECTOR, "form input[type=submit][value='Discard']").click()
    time.sleep(0.5)
    refused = driver.execute_script("return arguments[0].validationMessage", reason)
    check(
        bool(refused) and driver.find_elements(By.ID, "id_reason"),
        "an empty reason was not refused by the browser",
    )
    check(status_of(scratch, target["id"]) == "PENDING", "an empty reason changed the status")
    logger.info("discard #%s with an empty reason: the browser refuses: %r", target["id"], refused)

    # 2. A blank reason gets past the browser; the server must refuse it the same way.
    reason.send_keys("   ")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form input[type=submit][value='Discard']"))
    check(driver.current_url == confirm_url, f"a blank reason went on to {driver.current_url}")
    errornote, field_errors = text_of(driver, ".errornote"), text_of(driver, ".form-row.errors .errorlist")
    check(
        errornote == "A reason is required to discard dead letters." and field_errors == "This field is required.",
        f"a blank reason showed {errornote!r} / {field_errors!r}",
    )
    check(status_of(scratch, target["id"]) == "PENDING", "a blank reason changed the status")
    check(audit_rows(scratch, target["id"]) == [], "a blank reason left an audit row")
    logger.info("discard #%s with a blank reason: %r, %r; still PENDING", target["id"], errornote, field_errors)

    # 3. With a reason.
    reason = driver.find_element(By.ID, "id_reason")
    reason.clear()
    reason.send_keys(DISCARD_REASON)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form input[type=submit][value='Discard']"))
    check(driver.current_url == list_url, f"after Discard the browser is at {driver.current_url}")
    shown = messages(driver)
    check(shown == [("success", "Discarded 1 dead letter(s); skipped 0.")], f"after Discard the messages are {shown}")
    row = driver.find_element(By.CSS_SELECTOR, f"input.action-select[value='{target['id']}']")
    listed_status = row.find_element(By.XPATH, "./ancestor::tr").find_element(By.CSS_SELECTOR, "td.field-status").text
    check(listed_status == "discarded", f"the list shows #{target['id']} as {listed_status!r}")

    driver.get(f"{scratch.base_url}/admin/eventing/deadletter/{target['id']}/change/")
    status = readonly_field(driver, "status")
    check(status == "discarded", f"after Discard the page says status {status!r}")
    trail = audit_trail(driver)
    check(
        len(trail) == 1
        and trail[0]["kind"] == "Discard"
        and trail[0]["actor"] == scratch.username
        and trail[0]["reason"] == DISCARD_REASON
        and trail[0]["result"] == "discarded",
        f"the audit trail after Discard is {trail}",
    )
    check(status_of(scratch, target["id"]) == "DISCARDED", "the database does not say DISCARDED")
    logger.info("discard #%s: message %r, status %r, audit %s", target["id"], shown[0][1], status, trail)


def check_discard_from_detail(driver: WebDriver, scratch: Scratch, target: dict[str, Any]) -> None:
    """The Discard… button on a dead letter's page: the same confirmation, then back to that page."""
    url = f"{scratch.base_url}/admin/eventing/deadletter/{target['id']}/change/"
    driver.get(url)
    submit(driver, driver.find_element(By.CSS_SELECTOR, ".object-tools input[type=submit][value='Discard…']"))
    listed = text_of(driver, "ul.dead-letters")
    check(
        "Discard dead letters" in driver.title and f"#{target['id']}" in listed and listed.count("#") == 1,
        f"the Discard… button opened {driver.title!r} listing {listed!r}",
    )
    driver.find_element(By.ID, "id_reason").send_keys(DISCARD_REASON)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form input[type=submit][value='Discard']"))
    check(driver.current_url == url, f"Discard from the page went to {driver.current_url}, not back to {url}")
    shown = messages(driver)
    check(shown == [("success", "Discarded 1 dead letter(s); skipped 0.")], f"after Discard the messages are {shown}")
    status = readonly_field(driver, "status")
    check(status == "discarded", f"after Discard from its page the status is {status!r}")
    trail = audit_trail(driver)
    check(
        [(row["kind"], row["actor"], row["reason"]) for row in trail]
        == [("Discard", scratch.username, DISCARD_REASON)],
        f"the audit trail after Discard from its page is {trail}",
    )
    logger.info("discard #%s from its page: message %r, status %r, audit %s", target["id"], shown[0][1], status, trail)


def check_audit_list(driver: WebDriver, scratch: Scratch, acted_on: dict[int, str]) -> None:
    """The Dead letter actions list: one row per action taken here, each by the signed-in user."""
    driver.get(f"{scratch.base_url}/admin/eventing/deadletteraction/")
    rows = [
        {
            column: row.find_element(By.CSS_SELECTOR, f".field-{column}").text.strip()
            for column in ("kind", "actor", "dead_letter", "result")
        }
        for row in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    ]
    check(
        sorted((row["kind"], row["actor"]) for row in rows)
        == sorted((kind.capitalize(), scratch.username) for kind in acted_on.values()),
        f"the audit-trail list shows {rows}",
    )
    for dead_letter_id, kind in acted_on.items():
        check(
            [row[:2] for row in audit_rows(scratch, dead_letter_id)] == [(kind, scratch.username)],
            f"the database's audit trail of #{dead_letter_id} is {audit_rows(scratch, dead_letter_id)}",
        )
    logger.info("audit-trail list: %s", rows)


def start_system(scratch: Scratch, stack: ExitStack) -> tuple[list[BadEntry], list[dict[str, Any]]]:
    """Steps 1 and 2: the scratch system running, with the bad entries dead-lettered by the groups that read
    them. Returns the entries and the dead letters (as ``dlq list --json`` prints them); clean-up goes on
    ``stack``."""
    ensure_services(scratch)
    stack.callback(drop_scratch_data, scratch)
    manage(scratch, "migrate", "--noinput")
    manage(scratch, "createsuperuser", "--noinput")
    logger.info("migrated %s and created superuser %s", scratch.database, scratch.username)

    stack.callback(stop_all, scratch)
    start(scratch, "web", "runserver", "--noreload", f"127.0.0.1:{scratch.port}")
    for consumer in CONSUMERS:
        start(scratch, f"consumer-{consumer}", "run_consumer", consumer)
    wait_for_server(scratch)
    client = redis.Redis.from_url(scratch.redis_url, decode_responses=True)
    # The consumers create their groups at start; entries added before that are still read (groups start at 0).
    wait_for(
        "the three consumer groups",
        lambda: (
            {g["name"] for g in client.xinfo_groups(scratch.stream)} >= set(CONSUMERS)
            if client.exists(scratch.stream)
            else None
        ),
        timeout=60,
    )

    bad = bad_entries()
    added_at = time.monotonic()
    entry_ids = {client.xadd(scratch.stream, item.fields): item for item in bad}
    logger.info("added %s to %s", ", ".join(f"{i} ({b.label})" for i, b in entry_ids.items()), scratch.stream)
    expected = {(entry_id, group) for entry_id, item in entry_ids.items() for group in item.groups}

    def all_dead_lettered() -> list[dict[str, Any]] | None:
        assert_running(scratch)
        found = dead_letters(scratch)
        return found if {(d["entry_id"], d["consumer_group"]) for d in found} >= expected else None

    found = wait_for(f"{len(expected)} dead letters", all_dead_lettered, timeout=30, interval=0.5)
    took = time.monotonic() - added_at
    time.sleep(1.5)  # anything extra (a group dead-lettering what it should have ignored) shows up by now
    found = dead_letters(scratch)
    check(
        sorted((d["entry_id"], d["consumer_group"]) for d in found) == sorted(expected),
        f"expected dead letters {sorted(expected)}, found {[(d['entry_id'], d['consumer_group']) for d in found]}",
    )
    for dead_letter in found:
        item = entry_ids[dead_letter["entry_id"]]
        check(
            (dead_letter["reason"], dead_letter["event_type"], dead_letter["status"])
            == (item.reason, item.event_type, "PENDING"),
            f"dead letter {dead_letter} is not ({item.reason}, {item.event_type}, PENDING)",
        )
    logger.info("%d dead letters recorded within %.1fs (polling the table every 0.5s)", len(found), took)
    for dead_letter in sorted(found, key=lambda d: d["id"]):
        logger.info(
            "  #%s %s %s %s: %s",
            *(dead_letter[k] for k in ("id", "consumer_group", "event_type", "reason")),
            dead_letter["error_message"],
        )
    return bad, found


@contextmanager
def failure_screenshot(driver: WebDriver, scratch: Scratch) -> Iterator[None]:
    """On a failed check, what the browser showed goes to failure.png in the (kept) scratch directory."""
    try:
        yield
    except (CheckFailed, WebDriverException, TimeoutException):
        driver.save_screenshot(str(scratch.tmpdir / "failure.png"))
        raise


def check_console(
    driver: WebDriver, scratch: Scratch, bad: list[BadEntry], found: list[dict[str, Any]], out_dir: Path
) -> None:
    """Step 3, as the superuser: the list, one dead letter's page, Retry, Discard and the audit trail."""
    log_in(driver, scratch)
    check_list(driver, scratch, len(found), out_dir)
    rejected = next(item for item in bad if item.envelope)
    retry_target = next(d for d in found if d["event_type"] == rejected.event_type)
    check_detail_and_retry(driver, scratch, retry_target, rejected.envelope or {}, out_dir)
    discard_target = next(d for d in found if (d["consumer_group"], d["reason"]) == ("projections", "undecodable"))
    check_discard(driver, scratch, discard_target)
    detail_target = next(d for d in found if (d["consumer_group"], d["reason"]) == ("inventory", "unknown type"))
    check_discard_from_detail(driver, scratch, detail_target)
    acted_on = {retry_target["id"]: "retry", discard_target["id"]: "discard", detail_target["id"]: "discard"}
    check_audit_list(driver, scratch, acted_on)


def run(scratch: Scratch, out_dir: Path, stack: ExitStack) -> None:
    bad, found = start_system(scratch, stack)
    driver = start_browser(scratch)
    stack.callback(driver.quit)
    with failure_screenshot(driver, scratch):
        check_console(driver, scratch, bad, found, out_dir)
    assert_running(scratch)


@contextmanager
def scratch_state(keep: bool) -> Iterator[Scratch]:
    tmpdir = Path(tempfile.mkdtemp(prefix="dlq-shots-"))
    scratch = Scratch(
        tmpdir=tmpdir,
        token=secrets.token_hex(4),
        port=free_port(),
        username="ops-admin",
        password=secrets.token_urlsafe(16),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0"),
    )
    failed = True
    try:
        yield scratch
        failed = False
    finally:
        if keep or failed:
            logger.info("scratch directory kept: %s", tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


def cli(run: Callable[[Scratch, Path, ExitStack], None], *, description: str, passed: str) -> int:
    """The command line of a browser check: ``run`` on scratch state; 0 when it passes, 1 with the failed check."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "images", help="Where the PNGs go.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch directory (logs, database).")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    options.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with scratch_state(options.keep) as scratch, ExitStack() as stack:
            logger.info(
                "scratch: %s, stream %s, MongoDB %s, port %d",
                scratch.tmpdir,
                scratch.stream,
                scratch.mongo_db,
                scratch.port,
            )
            run(scratch, options.out_dir, stack)
    except CheckFailed as exc:
        logger.error("FAILED: %s", exc)
        return 1
    except (WebDriverException, subprocess.SubprocessError, redis.RedisError) as exc:
        logger.error("FAILED: %s: %s", type(exc).__name__, exc)
        return 1
    logger.info("PASSED: %s; screenshots in %s", passed, options.out_dir)
    return 0


def main() -> int:
    return cli(run, description=__doc__.split("\n\n")[0], passed="list, detail, Retry and Discard work")


if __name__ == "__main__":
    sys.exit(main())
