"""The dead-letter console: list, filters, one letter's page, retry and discard with their own permissions, and the
audit trail."""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdminMixin
from core.exceptions import InvalidInput
from eventing.models import DeadLetter, DeadLetterAction
from eventing.selectors import (
    dead_letter_payload_pretty,
)
from eventing.services import ActionResult, dead_letter_discard, dead_letter_retry

logger = logging.getLogger(__name__)

# Posted by the buttons on a dead letter's page, so the action returns there rather than to the list.
FROM_DETAIL = "_from_detail"


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
