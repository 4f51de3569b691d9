"""Keeping the outbox and the inbox bounded.

A published outbox row is needed only while a restarted Redis may have lost
it: the relay re-publishes the rows published since the last entry that
survived (``republish_lost``), so they stay EVENTING_OUTBOX_RETENTION_SECONDS.
An inbox row is needed while a copy of its event may still reach its
consumer, so inbox rows stay EVENTING_INBOX_RETENTION_SECONDS, which
:func:`check_retention` keeps longer than every outbox row that could be
re-published. Unpublished outbox rows never go, nor the inbox rows of an
event whose dead letter in the same group awaits a decision: retrying it must
still find them.

Rows go oldest first, in DELETEs of at most PRUNE_BATCH_ROWS primary keys
each, every one its own short transaction: a backlog of millions never holds
one long transaction (nor SQLite's write lock), and the relay publishes
between two of them (:class:`PrunePass`).
"""

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.db import models
from django.db.models import Q
from django.utils import timezone

from eventing.models import DeadLetter, OutboxEvent, ProcessedEvent

logger = logging.getLogger(__name__)

# Rows per DELETE. Every writer waits for SQLite's write lock while one runs: at 5,000
# rows the soak's POSTs and consumers showed stalls of over 150 ms at p99 (bench/soak.py's
# hops); at 500 one DELETE takes a few milliseconds, and a minute of peak traffic
# (9,000 rows) still goes in some twenty short steps.
PRUNE_BATCH_ROWS = 500

M = TypeVar("M", bound=models.Model)


@dataclass
class PruneReport:
    """Rows deleted (or, in a dry run, that would be) and inbox rows kept for pending dead letters."""

    outbox: int = 0
    inbox: int = 0
    kept_for_dead_letters: int = 0


def outbox_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.EVENTING_OUTBOX_RETENTION_SECONDS)


def inbox_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.EVENTING_INBOX_RETENTION_SECONDS)


def _held_by_dead_letters(rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """(consumer, event id) of the inbox rows among ``rows`` (pk, time, consumer, event id) that a pending
    dead letter of the same group still needs."""
    return {
        (group, event_id)
        for group, event_id in DeadLetter.objects.filter(
            status=DeadLetter.Status.PENDING, event_id__in={str(row[3]) for row in rows}
        ).values_list("consumer_group", "event_id")
    }


def _delete_oldest(
    expired: "models.QuerySet[M]",
    *,
    time_field: str,
    fields: Sequence[str],
    batch_rows: int,
    keep: Callable[[Sequence[tuple[Any, ...]]], set[int]] | None = None,
) -> Iterator[tuple[int, int]]:
    """Delete ``expired`` oldest first, one DELETE of at most ``batch_rows`` primary keys per step.
    Yields (deleted, kept) after each.

    Each batch is read in index order from where the last one ended (keyset on time, then pk), so rows
    ``keep`` spares are not read again and no batch scans what an earlier one covered.
    """
    after: tuple[datetime, int] | None = None
    while True:
        page = expired
        if after is not None:
            at, pk = after
            page = page.filter(**{f"{time_field}__gte": at}).filter(Q(**{f"{time_field}__gt": at}) | Q(pk__gt=pk))
        rows = list(page.order_by(time_field, "pk").values_list("pk", time_field, *fields)[:batch_rows])
        if not rows:
            return
        kept = keep(rows) if keep else set()
        doomed = [row[0] for row in rows if row[0] not in kept]
        # The expiry condition stays in the DELETE: whatever happened meanwhile, it never takes a live row.
        deleted = expired.filter(pk__in=doomed).delete()[0] if doomed else 0
        yield deleted, len(kept)
        if len(rows) < batch_rows:
            return
        after = rows[-1][1], rows[-1][0]


def _inbox_kept(rows: Sequence[tuple[Any, ...]]) -> set[int]:
    held = _held_by_dead_letters(rows)
    return {row[0] for row in rows if (row[2], str(row[3])) in held} if held else set()


class PrunePass:
    """One pass over the outbox and the inbox; each :meth:`step` runs one bounded DELETE.

    The cut-offs are fixed when the pass starts, so a pass ends even while rows keep expiring.
    """

    def __init__(self, *, now: datetime | None = None, batch_rows: int = PRUNE_BATCH_ROWS) -> None:
        now = now or timezone.now()
        self.report = PruneReport()
        self._steps = self._run(now, batch_rows)

    def _run(self, now: datetime, batch_rows: int) -> Iterator[None]:
        outbox = OutboxEvent.objects.filter(published_at__lt=outbox_cutoff(now))  # never an unpublished row
        for deleted, _ in _delete_oldest(outbox, time_field="published_at", fields=(), batch_rows=batch_rows):
            self.report.outbox += deleted
            yield
        inbox = ProcessedEvent.objects.filter(processed_at__lt=inbox_cutoff(now))
        for deleted, kept in _delete_oldest(
            inbox, time_field="processed_at", fields=("consumer", "event_id"), batch_rows=batch_rows, keep=_inbox_kept
        ):
            self.report.inbox += deleted
            self.report.kept_for_dead_letters += kept
            yield

    def step(self) -> bool:
        """Run the next DELETE. False once the pass is over (and logged)."""
        if next(self._steps, StopIteration) is StopIteration:
            if self.report.outbox or self.report.inbox:
                logger.info(
                    "pruned %d published outbox row(s) and %d inbox row(s)", self.report.outbox, self.report.inbox
                )
            return False
        return True


def prune_tables(*, now: datetime | None = None, batch_rows: int = PRUNE_BATCH_ROWS) -> PruneReport:
    """Delete every expired row now, in bounded DELETEs (``manage.py prune_tables``)."""
    prune = PrunePass(now=now, batch_rows=batch_rows)
    while prune.step():
        pass
    return prune.report


def count_expired(*, now: datetime | None = None) -> PruneReport:
    """What :func:`prune_tables` would delete now, deleting nothing (``prune_tables --dry-run``)."""
    now = now or timezone.now()
    inbox = ProcessedEvent.objects.filter(processed_at__lt=inbox_cutoff(now))
    pending = DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).exclude(event_id="")
    held = set(pending.values_list("consumer_group", "event_id"))
    event_ids = sorted({event_id for _, event_id in held if _is_uuid(event_id)})  # what an inbox row can hold
    kept = 0
    for start in range(0, len(event_ids), PRUNE_BATCH_ROWS):
        chunk = event_ids[start : start + PRUNE_BATCH_ROWS]
        matches = inbox.filter(event_id__in=chunk).values_list("consumer", "event_id")
        kept += sum(1 for consumer, event_id in matches if (consumer, str(event_id)) in held)
    return PruneReport(
        outbox=OutboxEvent.objects.filter(published_at__lt=outbox_cutoff(now)).count(),
        inbox=inbox.count() - kept,
        kept_for_dead_letters=kept,
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def redelivery_window() -> dict[str, float]:
    """The parts of the longest time after which the relay can still send an applied event again, in seconds:
    a published row is kept for the outbox retention, outlives it by up to one prune interval, is
    re-published with a margin and may sit pending under a dead consumer until it is reclaimed."""
    return {
        "EVENTING_OUTBOX_RETENTION_SECONDS": settings.EVENTING_OUTBOX_RETENTION_SECONDS,
        "EVENTING_PRUNE_INTERVAL_SECONDS": settings.EVENTING_PRUNE_INTERVAL_SECONDS,
        "EVENTING_REPUBLISH_MARGIN_SECONDS": settings.EVENTING_REPUBLISH_MARGIN_SECONDS,
        "EVENTING_CLAIM_IDLE_MS / 1000": settings.EVENTING_CLAIM_IDLE_MS / 1000,
    }


def check_retention(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """System check: retention windows that would let a redelivered event be applied twice."""
    outbox, inbox = settings.EVENTING_OUTBOX_RETENTION_SECONDS, settings.EVENTING_INBOX_RETENTION_SECONDS
    errors: list[checks.CheckMessage] = []
    if outbox <= settings.EVENTING_REPUBLISH_MARGIN_SECONDS:
        errors.append(
            checks.Error(
                f"EVENTING_OUTBOX_RETENTION_SECONDS ({outbox}) must be longer than "
                f"EVENTING_REPUBLISH_MARGIN_SECONDS ({settings.EVENTING_REPUBLISH_MARGIN_SECONDS}): after a Redis "
                "restart the relay re-publishes from the outbox the rows Redis may have lost, and they would be "
                "gone already.",
                hint="Keep published rows at least as long as a restarted Redis can have lost (default: one day).",
                id="eventing.E001",
            )
        )
    window = redelivery_window()
    needed = sum(window.values())
    if inbox < needed:
        parts = " + ".join(f"{name} ({value:g})" for name, value in window.items())
        errors.append(
            checks.Error(
                f"EVENTING_INBOX_RETENTION_SECONDS ({inbox}) is shorter than the longest time after which an "
                f"applied event can be delivered again, {needed:g} s = {parts}. A copy arriving after its inbox "
                "row was pruned would be applied twice.",
                hint="Raise EVENTING_INBOX_RETENTION_SECONDS (default: 7 days) or lower "
                "EVENTING_OUTBOX_RETENTION_SECONDS.",
                id="eventing.E002",
            )
        )
    return errors
