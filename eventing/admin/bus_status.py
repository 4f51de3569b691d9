"""The bus status page: the figures of ``manage.py streams`` for staff, with links into the dead-letter
queue filtered by group. Needs ``eventing.view_busstatuspage``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import redis
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from core.admin import ReadOnlyAdminMixin
from eventing.models import BusStatusPage, DeadLetter
from eventing.monitoring.status import bus_status


def dead_letters_url(*, group: str | None = None, status: str | None = None, reason: str | None = None) -> str:
    """The dead-letter list with its own filters chosen. Each parameter is the one its list filter reads, so
    the sidebar shows the choice and another choice there replaces it: ``consumer_group`` (no choices: Django's
    AllValuesFieldListFilter reads the bare field), ``status__exact`` and ``reason__exact`` (choices)."""
    query = {
        key: value
        for key, value in (("consumer_group", group), ("status__exact", status), ("reason__exact", reason))
        if value
    }
    return f"{reverse('admin:eventing_deadletter_changelist')}?{urlencode(query)}"


@admin.register(BusStatusPage)
class BusStatusAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[BusStatusPage]):
    change_list_template = "admin/eventing/busstatuspage/status.html"

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [path("", self.admin_site.admin_view(self.changelist_view), name="{}_{}_changelist".format(*info))]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Bus status",
            "subtitle": None,
            "opts": self.opts,
        }
        try:
            status = bus_status()
        except (redis.RedisError, DatabaseError) as exc:
            context["problem"] = f"The bus status cannot be read: {type(exc).__name__}. See the logs."
            return TemplateResponse(request, self.change_list_template, context)
        context["status"] = status
        context["streams"] = [
            {
                "name": stream.name,
                "length": stream.length,
                "groups": [
                    {"group": group, "dead_letters_url": dead_letters_url(group=group.name, status="PENDING")}
                    for group in stream.groups
                ],
            }
            for stream in status.streams
        ]
        context["dead_letters"] = [
            {
                "status": DeadLetter.Status(letter_status).label
                if letter_status in DeadLetter.Status
                else letter_status,
                "reason": reason,
                "count": count,
                "url": dead_letters_url(status=letter_status, reason=reason),
            }
            for (letter_status, reason), count in sorted(status.dead_letters.items())
        ]
        return TemplateResponse(request, self.change_list_template, context)
