"""The MongoDB event log, browsed read-only: one transaction's or one aggregate's events, or the whole log a page
at a time in logged order, and one event's page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse

from core.admin import ReadOnlyAdminMixin
from eventing.contract.context import MAX_ID_LENGTH
from eventing.contract.events import MAX_TYPE_LENGTH, registered_event_types
from eventing.models import EventLogEntry
from eventing.selectors import (
    LoggedEvent,
    event_log_get,
    event_log_list,
    event_log_page,
    event_producer,
)


def _page_number(value: str | None) -> int:
    try:
        return max(int(value or 1), 1)
    except ValueError:
        return 1


class EventLogFilterForm(forms.Form):
    NEWEST = "newest"
    OLDEST = "oldest"

    type = forms.CharField(
        required=False, max_length=MAX_TYPE_LENGTH, widget=forms.TextInput(attrs={"list": "event-types"})
    )
    aggregate_type = forms.CharField(required=False, max_length=MAX_ID_LENGTH)
    aggregate_id = forms.CharField(required=False, max_length=MAX_ID_LENGTH)
    correlation_id = forms.CharField(required=False, max_length=MAX_ID_LENGTH)
    order = forms.ChoiceField(
        required=False, choices=[(NEWEST, "newest first"), (OLDEST, "oldest first")], initial=NEWEST
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if (cleaned.get("type") or cleaned.get("aggregate_type")) and not (
            cleaned.get("correlation_id") or cleaned.get("aggregate_id")
        ):
            # The log is indexed by transaction and by aggregate; filtering all of it would scan it.
            raise forms.ValidationError("Type filters narrow a correlation id's or an aggregate id's events: give one.")
        return cleaned


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
        pager: dict[str, Any] | None = None
        records: list[LoggedEvent] = []
        if form.is_valid():
            params = form.cleaned_data
            if params["correlation_id"] or params["aggregate_id"]:
                # One transaction's or one aggregate's events: its index, paged and counted in memory.
                page = Paginator(
                    event_log_list(
                        event_type=params["type"],
                        aggregate_type=params["aggregate_type"],
                        aggregate_id=params["aggregate_id"],
                        correlation_id=params["correlation_id"],
                        newest_first=params["order"] != EventLogFilterForm.OLDEST,
                    ),
                    self.list_per_page,
                ).get_page(request.GET.get("page"))
                records = list(page)
                pager = {"number": page.number, "count": page.paginator.count, "pages": page.paginator.num_pages}
                pager |= {
                    "previous": page.has_previous() and page.number - 1,
                    "next": page.has_next() and page.number + 1,
                }
            else:
                # The whole log in the order it was logged, a page at a time, never counted.
                number = _page_number(request.GET.get("page"))
                records, more = event_log_page(page=number, page_size=self.list_per_page)
                pager = {
                    "number": number,
                    "count": None,
                    "pages": None,
                    "previous": number - 1,
                    "next": more and number + 1,
                }
        # The filters as a query string, for the page links to keep them.
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            **self.admin_site.each_context(request),
            "title": "Event log",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "pager": pager,
            "rows": [self._row(record) for record in records],
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
            "title": f"{record['type']} {record['id']}",
            "subtitle": None,
            "opts": self.opts,
            "row": self._row(record),
            "data_pretty": json.dumps(record.get("data") or {}, indent=2, sort_keys=True, ensure_ascii=False),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.detail_template, context)

    def _row(self, record: LoggedEvent) -> dict[str, Any]:
        causation_id = record.get("causation_id")
        return {
            "record": record,
            "occurred_at": _utc_millis(record["occurred_at"]),
            "recorded_at": _utc_millis(record.get("recorded_at")),
            "producer": event_producer(record["type"]),
            "detail_url": self._detail_url(record["id"]),
            "causation_url": self._detail_url(causation_id) if causation_id else None,
            "timeline_url": _timeline_url(record["correlation_id"]),
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
