#!/usr/bin/env python
"""Check the admin as a new operator would, in a real browser, and take every admin screenshot for the docs.

On the scratch system of scripts/dlq_screenshots.py (a temporary SQLite database, a stream, a MongoDB
database and a port of its own, the web server and the inventory, orders and projections consumers, with
the bad entries dead-lettered), it:

1. runs the dead-letter console walk-through of dlq_screenshots.py as the superuser (dlq-list.png,
   dlq-detail.png);
2. runs `manage.py seed_demo` (the `operators` group, the operator `demo` and the customer `alice`, sample
   stock) and has alice place an order through the API, so that every table has a record;
3. signs in as the operator (staff, not a superuser, in `operators`): the admin index lists the models,
   with no Add link; stock items, orders, reservations, catalogue items, the outbox and the inbox have no
   Add button, each record's page opens with neither Save nor Delete, and their add and delete pages are
   refused;
4. opens the bus status page (bus-status.png): the stream and each group's lag, pending entries, live
   consumers and dead letters, each count a link to the dead-letter list filtered by that group;
5. corrects the projections group's ORDER_CREATED that lacked placed_at with "Correct and retry…"
   (dlq-edit.png): broken JSON and a wrongly typed field are refused with nothing changed, the corrected
   envelope is re-delivered, the audit trail shows the diff (dlq-edit-audit.png) and the projections
   consumer logs the corrected event;
6. opens Swagger UI at /api/docs/ (api-docs.png): the operations render from local assets only.

It exits 1 with the failed check on stderr; on failure the scratch directory (server, consumer and
chromedriver logs, failure.png) is kept and named. Needs Redis and FerretDB (`scripts/services start`)
and `apt-get install -y chromium chromium-driver`.

    .venv/bin/python scripts/admin_screenshots.py [--out-dir docs/images] [--keep]
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import sys
import urllib.error
import urllib.request
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dlq_screenshots as dlq
import redis
from dlq_screenshots import (
    WINDOW,
    CheckFailed,
    Scratch,
    audit_rows,
    audit_trail,
    check,
    dead_letters,
    full_page_screenshot,
    messages,
    readonly_field,
    status_of,
    submit,
    text_of,
    wait_for,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

logger = logging.getLogger("admin_screenshots")

OPERATOR, CUSTOMER = "demo", "alice"
EDIT_LINK = ".object-tools a[href$='/edit/']"  # "Correct and retry…", shown in capitals
EDIT_REASON = "placed_at was missing from the producer's payload; set it to the time the order was created."
# What the operator sees on the admin index: app -> models, none of them addable.
OPERATOR_INDEX = {
    "Eventing": {"Bus status", "Dead letter actions", "Dead letters", "Event log", "Outbox events", "Processed events"},
    "Inventory": {"Reservations", "Stock items"},
    "Orders": {"Catalog items", "Customers", "Orders"},
}
# The records only services change: (admin URL path, what the page calls one).
READ_ONLY = [
    ("inventory/stockitem", "stock item"),
    ("orders/order", "order"),
    ("inventory/reservation", "reservation"),
    ("orders/catalogitem", "catalog item"),
    ("eventing/outboxevent", "outbox event"),
    ("eventing/processedevent", "processed event"),
]


@dataclass(frozen=True)
class Account:
    username: str
    password: str


def query_db(scratch: Scratch, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{scratch.database}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()


# -- Demo accounts and one order ------------------------------------------------------------------


def seed_demo(scratch: Scratch) -> tuple[Account, Account]:
    """`manage.py seed_demo`: the operator and the customer, whose generated passwords it prints once."""
    out = dlq.manage(scratch, "seed_demo", "--username", OPERATOR, "--customer", CUSTOMER)
    passwords = dict(re.findall(r"^demo [a-z ()]+: (\S+) / (\S+)  \(shown only now\)$", out, re.MULTILINE))
    check(
        set(passwords) == {OPERATOR, CUSTOMER},
        f"seed_demo did not print both generated passwords: {out!r}",
    )
    operator = query_db(
        scratch,
        "SELECT u.is_staff, u.is_superuser, g.name FROM auth_user u JOIN auth_user_groups ug ON ug.user_id = u.id "
        "JOIN auth_group g ON g.id = ug.group_id WHERE u.username = ?",
        OPERATOR,
    )
    check(operator == [(1, 0, "operators")], f"{OPERATOR} is (is_staff, is_superuser, group) {operator}")
    stock = [line for line in out.splitlines() if line.startswith("sample stock:")]
    logger.info("seed_demo: operator %s (staff, not superuser, in operators), customer %s, %s", *passwords, stock)
    return Account(OPERATOR, passwords[OPERATOR]), Account(CUSTOMER, passwords[CUSTOMER])


def api(scratch: Scratch, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """POST JSON to the API; the JSON answer, or CheckFailed with the status and body."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(  # noqa: S310 - the scratch server on 127.0.0.1
        f"{scratch.base_url}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"POST {path} answered {exc.code}: {exc.read()[:500]!r}") from None


def place_order(scratch: Scratch, customer: Account) -> str:
    """The customer orders one keyboard through the API; waits until the order is CONFIRMED."""
    wait_for(
        "the orders consumer to learn the sample stock (STOCK_ADDED)",
        lambda: query_db(scratch, "SELECT sku FROM orders_catalogitem WHERE sku = 'KBD-1'"),
    )
    token = api(scratch, "/api/auth/token/", {"username": customer.username, "password": customer.password})["token"]
    order = api(scratch, "/api/orders/", {"lines": [{"sku": "KBD-1", "quantity": 1}]}, token=str(token))
    order_id = str(order["id"])
    stored_id = order_id.replace("-", "")  # Django keeps a UUIDField as 32 hex digits on SQLite
    wait_for(
        f"order {order_id} to be confirmed",
        lambda: query_db(scratch, "SELECT 1 FROM orders_order WHERE id = ? AND status = 'CONFIRMED'", stored_id),
    )
    counts = {
        table: query_db(scratch, f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: S608 - fixed table names
        for table in (
            "inventory_stockitem",
            "orders_order",
            "inventory_reservation",
            "orders_catalogitem",
            "eventing_outboxevent",
            "eventing_processedevent",
        )
    }
    check(all(counts.values()), f"a table the operator checks is empty: {counts}")
    logger.info("%s placed order %s through the API; it is CONFIRMED; rows: %s", customer.username, order_id, counts)
    return order_id


# -- The operator's admin -------------------------------------------------------------------------


def check_operator_index(driver: WebDriver, scratch: Scratch) -> None:
    driver.get(f"{scratch.base_url}/admin/")
    listed: dict[str, set[str]] = {}
    for module in driver.find_elements(By.CSS_SELECTOR, "#content-main .module"):
        caption = module.find_elements(By.CSS_SELECTOR, "caption")
        if caption:
            models = {row.text.strip() for row in module.find_elements(By.CSS_SELECTOR, "tbody th[scope=row]")}
            listed[str(caption[0].get_attribute("textContent")).strip()] = models  # .text is in CSS capitals
    check(listed == OPERATOR_INDEX, f"the operator's admin index lists {listed}, expected {OPERATOR_INDEX}")
    adds = [link.get_attribute("href") for link in driver.find_elements(By.CSS_SELECTOR, "#content-main a.addlink")]
    check(not adds, f"the operator's admin index offers Add links: {adds}")
    changes = driver.find_elements(By.CSS_SELECTOR, "#content-main a.changelink")
    check(not changes, f"the operator's admin index offers {len(changes)} Change link(s); expected View only")
    logger.info("operator's index: %s; View links only", {app: sorted(models) for app, models in listed.items()})


def check_read_only(driver: WebDriver, scratch: Scratch, path: str, name: str) -> None:
    """A model only services change: listed with no Add button, a record viewed with no Save or Delete, and
    the add and delete pages refused."""
    list_url = f"{scratch.base_url}/admin/{path}/"
    driver.get(list_url)
    check(
        text_of(driver, "#content h1") == f"Select {name} to view",
        f"{list_url} is headed {text_of(driver, '#content h1')!r}",
    )
    check(
        not driver.find_elements(By.CSS_SELECTOR, ".object-tools a.addlink"),
        f"the operator sees an Add button on {list_url}",
    )
    actions = [option.text for option in driver.find_elements(By.CSS_SELECTOR, "select[name=action] option")]
    check(not any("Delete" in action for action in actions), f"{list_url} offers {actions}")
    links = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr th a, #result_list tbody tr td a")
    check(bool(links), f"{list_url} lists no {name} to open")
    record_url = str(links[0].get_attribute("href"))
    links[0].click()
    check(driver.current_url == record_url, f"clicking a {name} opened {driver.current_url}, not {record_url}")
    check(
        text_of(driver, "#content h1") == f"View {name}",
        f"a {name}'s page is headed {text_of(driver, '#content h1')!r}",
    )
    for selector, what in (
        ("input[type=submit][name=_save]", "Save"),
        ("input[type=submit][name=_continue]", "Save and continue editing"),
        ("input[type=submit][name=_addanother]", "Save and add another"),
        ("a.deletelink", "Delete"),
    ):
        check(not driver.find_elements(By.CSS_SELECTOR, selector), f"a {name}'s page has a {what} button")
    check(
        not driver.find_elements(
            By.CSS_SELECTOR,
            "#content-main form input:not([type=hidden]):not([type=submit]), #content-main form select, "
            "#content-main form textarea",
        ),
        f"a {name}'s page has an editable field",
    )
    readonly = driver.find_elements(By.CSS_SELECTOR, "#content-main .readonly")
    check(bool(readonly), f"a {name}'s page shows no fields")
    for refused in (f"{list_url}add/", f"{record_url.rstrip('/').removesuffix('/change')}/delete/"):
        driver.get(refused)
        check("403 Forbidden" in driver.title, f"the operator opened {refused}: {driver.title!r}")
    logger.info(
        "%s: listed, no Add; %s viewed with %d read-only field(s), no Save or Delete", name, record_url, len(readonly)
    )


def check_orders_actions(driver: WebDriver, scratch: Scratch) -> None:
    """The operator may cancel orders (orders.change_order), through the action that calls the service."""
    driver.get(f"{scratch.base_url}/admin/orders/order/")
    actions = [option.text for option in driver.find_elements(By.CSS_SELECTOR, "select[name=action] option")]
    check(
        actions == ["---------", "Cancel selected orders (emits ORDER_CANCELLED)"],
        f"the operator's order actions are {actions}",
    )
    logger.info("orders: the operator's only action is %r", actions[1])


# -- Bus status -----------------------------------------------------------------------------------


def pending_by_group(scratch: Scratch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for letter in dead_letters(scratch):
        if letter["status"] == "PENDING":
            counts[letter["consumer_group"]] = counts.get(letter["consumer_group"], 0) + 1
    return counts


def bus_status_rows(driver: WebDriver) -> dict[str, dict[str, Any]]:
    table = driver.find_element(By.CSS_SELECTOR, ".bus-status table#groups-1")
    headings = [str(th.get_attribute("textContent")).strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    rows: dict[str, dict[str, Any]] = {}
    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = tr.find_elements(By.CSS_SELECTOR, "td")
        row: dict[str, Any] = {heading: cell.text.strip() for heading, cell in zip(headings, cells, strict=True)}
        row["link"] = cells[headings.index("Dead letters")].find_element(By.TAG_NAME, "a")
        rows[row["Consumer group"]] = row
    return rows


def check_bus_status(driver: WebDriver, scratch: Scratch, out_dir: Path) -> None:
    driver.get(f"{scratch.base_url}/admin/")
    submit(driver, driver.find_element(By.LINK_TEXT, "Bus status"))
    status_url = f"{scratch.base_url}/admin/eventing/busstatuspage/"
    check(driver.current_url == status_url, f"the Bus status link opened {driver.current_url}")
    check(not driver.find_elements(By.CSS_SELECTOR, ".errornote"), f"the page says {text_of(driver, '.errornote')!r}")
    stream = text_of(driver, ".bus-status h2")
    check(f"Stream {scratch.stream}:" in stream, f"the page's headings are {stream!r}")
    headings = [
        str(th.get_attribute("textContent")).strip()
        for th in driver.find_elements(By.CSS_SELECTOR, "table#groups-1 thead th")
    ]
    for column in ("Consumer group", "Lag", "Pending", "Alive", "Dead letters"):
        check(column in headings, f"the groups table has no {column!r} column: {headings}")
    expected = pending_by_group(scratch)

    def settled() -> dict[str, dict[str, Any]] | None:
        # Heartbeats and acks are a moment behind a fresh start; reload until every consumer reports in.
        driver.get(status_url)
        rows = bus_status_rows(driver)
        live = all(rows.get(group, {}).get("Alive") == "1" for group in dlq.CONSUMERS)
        return rows if live else None

    rows = wait_for("each group to have one live consumer on the bus status page", settled, timeout=30, interval=1)
    check(set(rows) >= set(dlq.CONSUMERS), f"the groups shown are {sorted(rows)}")
    for group in dlq.CONSUMERS:
        row = rows[group]
        check(
            row["Lag"].isdigit() and row["Pending"].isdigit(),
            f"{group}'s lag and pending are {row['Lag']!r}, {row['Pending']!r}",
        )
        check(
            row["Dead letters"] == str(expected.get(group, 0)),
            f"the page shows {row['Dead letters']} dead letters for {group}, the queue has {expected.get(group, 0)}",
        )
    full_page_screenshot(driver, out_dir / "bus-status.png", width=WINDOW[0])
    logger.info(
        "bus status: %s -> %s",
        {g: {k: v for k, v in r.items() if k not in ("link", "Consumers (idle)")} for g, r in rows.items()},
        out_dir / "bus-status.png",
    )

    for group in dlq.CONSUMERS:
        driver.get(status_url)
        link = bus_status_rows(driver)[group]["link"]
        count = int(link.text)
        submit(driver, link)
        query = parse_qs(urlsplit(driver.current_url).query)
        check(
            driver.current_url.startswith(f"{scratch.base_url}/admin/eventing/deadletter/?")
            and query == {"consumer_group": [group], "status__exact": ["PENDING"]},
            f"{group}'s dead-letter count links to {driver.current_url}",
        )
        listed = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        groups = {row.find_element(By.CSS_SELECTOR, "td.field-consumer_group").text for row in listed}
        statuses = {row.find_element(By.CSS_SELECTOR, "td.field-status").text for row in listed}
        check(
            len(listed) == count and groups <= {group} and statuses <= {"pending a decision"},
            f"{group}'s link ({count}) lists {len(listed)} dead letters of groups {groups}, statuses {statuses}",
        )
        # The sidebar shows what the link chose (the filter's own parameters), so the operator can change it.
        chosen = {
            str(details.get_attribute("data-filter-title")): text_of_element(details, "li.selected")
            for details in driver.find_elements(By.CSS_SELECTOR, "#changelist-filter details[data-filter-title]")
        }
        check(
            chosen.get("consumer group") == group and chosen.get("status") == "pending a decision",
            f"after {group}'s link the filter sidebar has chosen {chosen}",
        )
        logger.info("bus status: %s's count %d links to the list filtered to its %d pending", group, count, len(listed))


# -- Correct and retry ----------------------------------------------------------------------------


def screenshot_with(driver: WebDriver, path: Path, selector: str) -> None:
    """A window-sized screenshot with the element's bottom at the window's bottom (or the page's top)."""
    element = driver.find_element(By.CSS_SELECTOR, selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", element)
    driver.save_screenshot(str(path))
    driver.execute_script("window.scrollTo(0, 0)")


def screenshot_down_to(driver: WebDriver, path: Path, selector: str, *, margin: int = 24) -> None:
    """The page from its top down to the bottom of the last element ``selector`` finds (at least a window's
    height)."""
    bottom = driver.execute_script(
        "return arguments[0].getBoundingClientRect().bottom + window.scrollY",
        driver.find_elements(By.CSS_SELECTOR, selector)[-1],
    )
    dlq.set_viewport(driver, WINDOW[0], max(int(bottom) + margin, WINDOW[1]))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    dlq.set_viewport(driver, *WINDOW)


def text_of_element(element: WebElement, selector: str) -> str:
    return " ".join(found.text.strip() for found in element.find_elements(By.CSS_SELECTOR, selector))


def envelope_box(driver: WebDriver) -> WebElement:
    return driver.find_element(By.ID, "id_envelope")


def fill_edit_form(driver: WebDriver, envelope: str, reason: str) -> None:
    """Replace the textarea's envelope (set as a paste would) and type the reason."""
    box = envelope_box(driver)
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", box, envelope
    )
    reason_box = driver.find_element(By.ID, "id_reason")
    reason_box.clear()
    reason_box.send_keys(reason)


def check_refused_edit(
    driver: WebDriver, scratch: Scratch, target: dict[str, Any], envelope: str, what: str, expected: str
) -> None:
    edit_url = driver.current_url
    retry_stream = f"{scratch.stream}:retry:{target['consumer_group']}"
    client = redis.Redis.from_url(scratch.redis_url)
    delivered = client.xlen(retry_stream)
    fill_edit_form(driver, envelope, EDIT_REASON)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#dead-letter-edit input[type=submit]"))
    check(driver.current_url == edit_url, f"an edit with {what} went on to {driver.current_url}")
    errors = text_of(driver, ".form-row.errors .errorlist")
    check(
        errors.startswith("The edited envelope is not a valid event:") and expected in errors,
        f"an edit with {what} showed {errors!r}, expected it to mention {expected!r}",
    )
    check(envelope_box(driver).get_attribute("value") == envelope, f"after {what} the textarea lost the edit")
    check(status_of(scratch, target["id"]) == "PENDING", f"an edit with {what} changed the status")
    check(audit_rows(scratch, target["id"]) == [], f"an edit with {what} left an audit row")
    check(client.xlen(retry_stream) == delivered, f"an edit with {what} delivered something to {retry_stream}")
    logger.info("edit #%s with %s: refused with %r; still PENDING, no audit row", target["id"], what, errors)


def check_edit(driver: WebDriver, scratch: Scratch, operator: Account, target: dict[str, Any], out_dir: Path) -> None:
    """``target`` is the projections group's dead letter of the ORDER_CREATED sent without placed_at."""
    detail_url = f"{scratch.base_url}/admin/eventing/deadletter/{target['id']}/change/"
    edit_url = f"{scratch.base_url}/admin/eventing/deadletter/{target['id']}/edit/"
    driver.get(detail_url)
    submit(driver, driver.find_element(By.CSS_SELECTOR, EDIT_LINK))
    check(driver.current_url == edit_url, f"Correct and retry… opened {driver.current_url}")
    check(
        driver.title.startswith(f"Correct and retry dead letter #{target['id']}"),
        f"the edit page is titled {driver.title!r}",
    )
    shown = str(envelope_box(driver).get_attribute("value"))
    original = json.loads(shown)
    check(
        original["id"] == target["event_id"]
        and original["type"] == "ORDER_CREATED"
        and "placed_at" not in original["data"],
        f"the edit page's envelope is {shown}",
    )

    # 1. Broken JSON, 2. a field of the wrong type: each refused with the reason, nothing changed.
    check_refused_edit(driver, scratch, target, shown.rstrip().removesuffix("}"), "broken JSON", "JSON")
    placed_at = original["occurred_at"]
    wrong_type = {**original, "data": {**original["data"], "placed_at": placed_at, "lines": "two lamps"}}
    check_refused_edit(
        driver, scratch, target, json.dumps(wrong_type, indent=2, sort_keys=True), "lines as a string", "lines"
    )

    # 3. The fix, on the page opened afresh (the envelope as it was, no error left from above): placed_at
    # added, the time the order was created; everything else as it was.
    driver.get(edit_url)
    check(
        envelope_box(driver).get_attribute("value") == shown and not text_of(driver, ".errorlist"),
        "after the refused edits the edit page no longer starts from the dead letter's envelope",
    )
    corrected = {**original, "data": {**original["data"], "placed_at": placed_at}}
    fill_edit_form(driver, json.dumps(corrected, indent=2, sort_keys=True), EDIT_REASON)
    overflow = driver.execute_script(
        "const box = arguments[0].getBoundingClientRect(), row = arguments[0].closest('.form-row')"
        ".getBoundingClientRect(); return Math.max(box.right - row.right, row.left - box.left, 0)",
        envelope_box(driver),
    )
    check(overflow == 0, f"the envelope's textarea sticks out of its form row by {overflow}px (its edge is cut off)")
    full_page_screenshot(driver, out_dir / "dlq-edit.png", width=WINDOW[0])
    logger.info("edit #%s: placed_at %s added -> %s", target["id"], placed_at, out_dir / "dlq-edit.png")
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#dead-letter-edit input[type=submit]"))
    check(driver.current_url == detail_url, f"after the edit the browser is at {driver.current_url}")
    retry_stream = f"{scratch.stream}:retry:{target['consumer_group']}"
    shown_messages = messages(driver)
    check(
        len(shown_messages) == 1
        and shown_messages[0][0] == "success"
        and shown_messages[0][1].startswith(
            f"#{target['id']}: corrected and re-delivered to projections as {retry_stream} "
        ),
        f"after the edit the messages are {shown_messages}",
    )
    status = readonly_field(driver, "status")
    check(status == "retried", f"after the edit the page says status {status!r}")
    check(status_of(scratch, target["id"]) == "RETRIED", "the database does not say RETRIED")
    check(
        not driver.find_elements(By.CSS_SELECTOR, ".object-tools input[type=submit]")
        and not driver.find_elements(By.CSS_SELECTOR, EDIT_LINK),
        "a corrected dead letter's page still offers Retry, Correct and retry… or Discard",
    )
    trail = audit_trail(driver)
    check(
        len(trail) == 1
        and (trail[0]["kind"], trail[0]["actor"], trail[0]["reason"])
        == ("edit and retry", operator.username, EDIT_REASON)
        and trail[0]["result"].startswith(f"corrected and re-delivered to projections as {retry_stream} "),
        f"the audit trail after the edit is {trail}",
    )
    diff = driver.find_element(By.CSS_SELECTOR, "#actions-group td.field-edit pre.edit-diff").text
    # The diff adds placed_at; any other line it touches only gains the comma before it.
    changed = [line for line in diff.splitlines()[2:] if line.startswith(("+", "-"))]
    added = {line[1:].rstrip(",") for line in changed if line.startswith("+")}
    removed = {line[1:].rstrip(",") for line in changed if line.startswith("-")}
    check(
        diff.startswith(f"--- original\n+++ edited by {operator.username}")
        and added - removed == {f'    "placed_at": "{placed_at}"'}
        and removed <= added,
        f"the audit trail's diff is {diff!r}",
    )
    # The payload as it failed, above the audit trail with the change.
    screenshot_with(driver, out_dir / "dlq-edit-audit.png", "#actions-group")
    logger.info(
        "edit #%s: %r, status %r, audit diff %r -> %s",
        target["id"],
        shown_messages[0][1],
        status,
        diff,
        out_dir / "dlq-edit-audit.png",
    )

    # The projections consumer applies the corrected event: it is in the event log, with placed_at.
    log_url = f"{scratch.base_url}/admin/eventing/eventlogentry/{target['event_id']}/"

    def logged() -> bool:
        driver.get(log_url)
        return "404" not in driver.title and "ORDER_CREATED" in driver.title

    wait_for(f"the projections consumer to log {target['event_id']}", logged, timeout=20, interval=0.5)
    page = text_of(driver, "#content")
    check(f'"placed_at": "{placed_at}"' in page, f"the event log's ORDER_CREATED does not show placed_at: {page!r}")
    again = [
        letter
        for letter in dead_letters(scratch)
        if letter["event_id"] == target["event_id"] and letter["consumer_group"] == "projections"
    ]
    check(
        [(letter["id"], letter["status"]) for letter in again] == [(target["id"], "RETRIED")],
        f"the corrected event was dead-lettered again: {again}",
    )
    logger.info("edit #%s: the projections consumer logged the corrected event, no new dead letter", target["id"])


# -- Swagger UI -----------------------------------------------------------------------------------


def check_api_docs(driver: WebDriver, scratch: Scratch, out_dir: Path) -> None:
    driver.get(f"{scratch.base_url}/api/docs/")
    operations = wait_for(
        "Swagger UI to render the operations",
        lambda: driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock .opblock-summary"),
        timeout=20,
    )
    title = text_of(driver, ".swagger-ui .info .title")
    check(title.startswith("eventmono API"), f"Swagger UI's title is {title!r}")
    check(
        not driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .errors-wrapper"),
        f"Swagger UI shows errors: {text_of(driver, '.swagger-ui .errors-wrapper')!r}",
    )
    paths = {
        element.text.replace("\u200b", "").strip()
        for element in driver.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path")
    }
    for expected in (
        "/api/orders/",
        "/api/orders/{order_id}/cancel/",
        "/api/timeline/{correlation_id}/",
        "/api/inventory/items/",
        "/api/events/",
    ):
        check(expected in paths, f"Swagger UI does not list {expected}: {sorted(paths)}")
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat(Array.from(document.querySelectorAll('script[src], link[href]'), e => e.src || e.href))"
    )
    foreign = sorted({url for url in loaded if not url.startswith(f"{scratch.base_url}/")})
    check(not foreign, f"Swagger UI loads from elsewhere than the app: {foreign}")
    # The operations; the schemas listed below them are left out.
    screenshot_down_to(driver, out_dir / "api-docs.png", ".swagger-ui .opblock-tag-section")
    logger.info(
        "Swagger UI: %r, %d operations on %d paths, %d resources all local -> %s",
        title.splitlines()[0],
        len(operations),
        len(paths),
        len(set(loaded)),
        out_dir / "api-docs.png",
    )


# -- The run --------------------------------------------------------------------------------------


def run(scratch: Scratch, out_dir: Path, stack: ExitStack) -> None:
    bad, found = dlq.start_system(scratch, stack)
    operator, customer = seed_demo(scratch)
    place_order(scratch, customer)
    edit_target = next(
        d
        for d in found
        if (d["consumer_group"], d["event_type"], d["reason"]) == ("projections", "ORDER_CREATED", "invalid event")
    )
    driver = dlq.start_browser(scratch)
    stack.callback(driver.quit)
    with dlq.failure_screenshot(driver, scratch):
        dlq.check_console(driver, scratch, bad, found, out_dir)
        dlq.log_out(driver, scratch)
        dlq.log_in(driver, scratch, operator.username, operator.password)
        check_operator_index(driver, scratch)
        for path, name in READ_ONLY:
            check_read_only(driver, scratch, path, name)
        check_orders_actions(driver, scratch)
        check_bus_status(driver, scratch, out_dir)
        check_edit(driver, scratch, operator, edit_target, out_dir)
        check_api_docs(driver, scratch, out_dir)
    dlq.assert_running(scratch)


def main() -> int:
    return dlq.cli(
        run,
        description=(__doc__ or "").split("\n\n")[0],
        passed="the dead-letter console, the operator's read-only admin, bus status, correct and retry, Swagger UI",
    )


if __name__ == "__main__":
    sys.exit(main())
