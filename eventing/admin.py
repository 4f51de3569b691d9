"""The admin: outbox and inbox for inspection, the dead-letter console (retry, discard, audit trail), and the
MongoDB event log (read-only browsing)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html

from core.api import CountingPaginator
from core.exceptions import InvalidInput
from eventing.contract.events import registered_event_types
from eventing.models import DeadLetter, DeadLetterAction, EventLogEntry, OutboxEvent, ProcessedEvent
from eventing.readside.event_log import EventRecord
from eventing.selectors import dead_letter_payload_pretty, event_log_get, event_log_list, event_producer
from eventing.services import ActionResult, dead_letter_discard, dead_letter_retry

logger = logging.getLogger(__name__)

# Posted by the buttons on a dead letter's page, so the action returns there rather than to the list.
FROM_DETAIL = "_from_detail"


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin[OutboxEvent]):
    list_display = ["id", "event_type", "event_id", "stream", "occurred_at", "published_at"]
    list_filter = ["event_type", "stream", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["event_id"]
    readonly_fields = ["event_id", "event_type", "stream", "payload", "occurred_at", "published_at"]


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(admin.ModelAdmin[ProcessedEvent]):
    list_display = ["consumer", "event_id", "processed_at"]
    list_filter = ["consumer"]
    search_fields = ["event_id"]


class ReadOnlyAdminMixin:
    """The record is written by the consumers and the services only: nobody adds, edits or deletes it here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeadLetterActionInline(ReadOnlyAdminMixin, admin.TabularInline[DeadLetterAction, DeadLetter]):
    model = DeadLetterAction
    fields = ["at", "kind", "actor", "reason", "result"]
    readonly_fields = ["at", "kind", "actor", "reason", "result"]
    ordering = ["at", "id"]
    extra = 0
    verbose_name = "audit entry"
    verbose_name_plural = "audit trail"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Who acted on a dead letter is part of its record: whoever may see the entry may see its trail.
        return request.user.has_perm("eventing.view_deadletter") or super().has_view_permission(request, obj)


class DiscardForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Why these events are given up on for good; kept in the audit trail.",
    )


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[DeadLetter]):
    list_display = [
        "id",
        "consumer_group",
        "event_type",
        "reason",
        "status",
        "attempts",
        "last_failed_at",
        "event_id",
        "correlation_id",
    ]
    list_filter = ["consumer_group", "event_type", "status", "reason", ("created_at", admin.DateFieldListFilter)]
    # Exact matches: ids are looked up, never searched by fragment.
    search_fields = ["=event_id", "=correlation_id", "=entry_id"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "status",
                    "consumer_group",
                    "event_type",
                    "event_id",
                    "correlation_id",
                    "reason",
                    "attempts",
                    "first_failed_at",
                    "last_failed_at",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
        ("Where", {"fields": ["stream", "entry_id", "dead_letter_entry_id", "handler"]}),
        ("Error", {"fields": ["error_class", "error_message", "traceback_pretty"]}),
        ("Payload", {"fields": ["payload_pretty"]}),
    ]
    readonly_fields = [str(field) for _, options in fieldsets for field in options["fields"]]
    inlines = [DeadLetterActionInline]
    actions = ["retry_selected", "discard_selected"]
    change_form_template = "admin/eventing/deadletter/change_form.html"

    @admin.display(description="traceback")
    def traceback_pretty(self, dead_letter: DeadLetter) -> str:
        if not dead_letter.traceback:
            return "-"
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', dead_letter.traceback)

    @admin.display(description="payload (the entry's fields; an envelope in data is shown decoded)")
    def payload_pretty(self, dead_letter: DeadLetter) -> str:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', dead_letter_payload_pretty(dead_letter))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("eventing.retry_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("eventing.discard_deadletter")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: DeadLetter | None = None,
    ) -> HttpResponse:
        pending = obj is not None and obj.status == DeadLetter.Status.PENDING
        context.update(
            {
                "can_retry": pending and self.has_retry_permission(request),
                "can_discard": pending and self.has_discard_permission(request),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "from_detail": FROM_DETAIL,
            }
        )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @admin.action(description="Retry selected dead letters", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse | None:
        results = dead_letter_retry(dead_letters=queryset, actor=request.user.get_username())
        self._report(request, results, done="Re-delivered")
        return self._back(request)

    @admin.action(description="Discard selected dead letters", permissions=["discard"])
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse | None:
        # Django's intermediate-page pattern: the confirmation form posts the action back with a "post" marker.
        form = DiscardForm(request.POST if "post" in request.POST else None)
        if form.is_valid():
            try:
                results = dead_letter_discard(
                    dead_letters=queryset, actor=request.user.get_username(), reason=form.cleaned_data["reason"]
                )
            except InvalidInput as exc:
                form.add_error("reason", exc.field_errors.get("reason", exc.message))
            else:
                self._report(request, results, done="Discarded")
                return self._back(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Discard dead letters",
            "opts": self.model._meta,
            "queryset": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": "discard_selected",
            "from_detail": FROM_DETAIL if FROM_DETAIL in request.POST else "",
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/eventing/deadletter/discard_confirmation.html", context)

    def _report(self, request: HttpRequest, results: list[ActionResult], *, done: str) -> None:
        skipped = [result for result in results if not result.done]
        message = f"{done} {len(results) - len(skipped)} dead letter(s); skipped {len(skipped)}."
        if skipped:
            details = "; ".join(f"#{result.dead_letter.pk}: {result.message}" for result in skipped)
            message = f"{message} {details}."
        logger.info("dead letters: %s by %s: %s", done.lower(), request.user.get_username(), message)
        self.message_user(request, message, messages.WARNING if skipped else messages.SUCCESS)

    def _back(self, request: HttpRequest) -> HttpResponse | None:
        """Back to the dead letter's page when acted on from there; None returns to the list (Django's default)."""
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        if FROM_DETAIL in request.POST and len(selected) == 1 and selected[0].isdigit():
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change",
                    args=[int(selected[0])],
                    current_app=self.admin_site.name,
                )
            )
        return None


@admin.register(DeadLetterAction)
class DeadLetterActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[DeadLetterAction]):
    list_display = ["at", "kind", "actor", "dead_letter", "result", "batch"]
    list_filter = ["kind", "actor"]
    list_select_related = ["dead_letter"]


class EventLogFilterForm(forms.Form):
    NEWEST = "newest"
    OLDEST = "oldest"

    type = forms.CharField(required=False, max_length=100, widget=forms.TextInput(attrs={"list": "event-types"}))
    aggregate_type = forms.CharField(required=False, max_length=100)
    aggregate_id = forms.CharField(required=False, max_length=128)
    correlation_id = forms.CharField(required=False, max_length=128)
    order = forms.ChoiceField(
        required=False, choices=[(NEWEST, "newest first"), (OLDEST, "oldest first")], initial=NEWEST
    )


def _timeline_url(correlation_id: str) -> str | None:
    # Ids written to the stream by hand may hold characters no URL path segment can carry.
    try:
        return reverse("timeline", args=[correlation_id])
    except NoReverseMatch:
        return None


def _utc_millis(moment: datetime | None) -> str:
    # MongoDB keeps milliseconds: more digits would only show zeros.
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else "-"


@admin.register(EventLogEntry)
class EventLogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[EventLogEntry]):
    """The event log in MongoDB, browsed without a Mongo shell: a filtered, paginated list and one event's page.

    EventLogEntry has no table, so only these two views exist: none of the ModelAdmin's own views (which
    query the model) is routed. Seeing them needs ``eventing.view_eventlogentry``.
    """

    list_per_page = 100
    change_list_template = "admin/eventing/eventlogentry/change_list.html"
    detail_template = "admin/eventing/eventlogentry/detail.html"

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="{}_{}_changelist".format(*info)),
            # Named like a change view, so the admin's own links to one object lead here.
            path("<str:event_id>/", self.admin_site.admin_view(self.event_view), name="{}_{}_change".format(*info)),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = EventLogFilterForm(request.GET)
        page = None
        if form.is_valid():
            params = form.cleaned_data
            records = event_log_list(
                event_type=params["type"],
                aggregate_type=params["aggregate_type"],
                aggregate_id=params["aggregate_id"],
                correlation_id=params["correlation_id"],
                newest_first=params["order"] != EventLogFilterForm.OLDEST,
            )
            page = CountingPaginator(records, self.list_per_page).get_page(request.GET.get("page"))
        # The filters as a query string, for the page links to keep them.
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            **self.admin_site.each_context(request),
            "title": "Event log",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "page": page,
            "rows": [self._row(record) for record in page] if page else [],
            "event_types": sorted(registered_event_types()),
            "filter_query": query.urlencode(),
            "order": form.cleaned_data.get("order") if form.is_valid() else "",
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context)

    def event_view(self, request: HttpRequest, event_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        record = event_log_get(event_id=event_id)
        if record is None:
            raise Http404(f"No event {event_id} in the event log.")
        context = {
            **self.admin_site.each_context(request),
            "title": f"{record.type} {record.id}",
            "subtitle": None,
            "opts": self.opts,
            "row": self._row(record),
            "data_pretty": json.dumps(record.data, indent=2, sort_keys=True, ensure_ascii=False),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.detail_template, context)

    def _row(self, record: EventRecord) -> dict[str, Any]:
        return {
            "record": record,
            "occurred_at": _utc_millis(record.occurred_at),
            "recorded_at": _utc_millis(record.recorded_at),
            "producer": event_producer(record.type),
            "detail_url": self._detail_url(record.id),
            "causation_url": self._detail_url(record.causation_id) if record.causation_id else None,
            "timeline_url": _timeline_url(record.correlation_id),
        }

    def _detail_url(self, event_id: str) -> str | None:
        try:
            return reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[event_id],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return None
