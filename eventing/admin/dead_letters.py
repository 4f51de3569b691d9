"""The dead-letter console: list, filters, one letter's page, retry and discard with their own permissions, and the
audit trail."""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdminMixin
from core.exceptions import InvalidInput
from eventing.models import DeadLetter, DeadLetterAction
from eventing.selectors import (
    dead_letter_payload_pretty,
)
from eventing.services import (
    ActionResult,
    dead_letter_discard,
    dead_letter_edit,
    dead_letter_envelope_text,
    dead_letter_retry,
)

logger = logging.getLogger(__name__)

# Posted by the buttons on a dead letter's page, so the action returns there rather than to the list.
FROM_DETAIL = "_from_detail"


class DeadLetterActionInline(ReadOnlyAdminMixin, admin.TabularInline[DeadLetterAction, DeadLetter]):
    model = DeadLetterAction
    fields = ["at", "kind", "actor", "reason", "result", "edit"]
    readonly_fields = ["at", "kind", "actor", "reason", "result", "edit"]
    ordering = ["at", "id"]
    extra = 0
    verbose_name = "audit entry"
    verbose_name_plural = "audit trail"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Who acted on a dead letter is part of its record: whoever may see the entry may see its trail.
        return request.user.has_perm("eventing.view_deadletter") or super().has_view_permission(request, obj)

    @admin.display(description="edit (original, then the change)")
    def edit(self, action: DeadLetterAction) -> str:
        if not action.diff:
            return "-"
        return format_html(
            '<details><summary>original envelope</summary><pre style="white-space: pre-wrap">{}</pre></details>'
            '<pre class="edit-diff" style="white-space: pre-wrap">{}</pre>',
            action.original,
            action.diff,
        )


class EditForm(forms.Form):
    envelope = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 28, "cols": 100, "spellcheck": "false", "class": "vLargeTextField"}),
        strip=False,
        help_text="The event's envelope as JSON. It is validated against the event's schema before it is sent; "
        "its id must stay.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100}),
        help_text="Why the event needed correcting; kept in the audit trail with the original and the diff.",
    )


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

    def has_edit_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("eventing.edit_deadletter")

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        edit = path(
            "<int:object_id>/edit/", self.admin_site.admin_view(self.edit_view), name="{}_{}_edit".format(*info)
        )
        return [edit, *super().get_urls()]

    def edit_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Correct the failed event's envelope and deliver it again to its group (``dead_letter_edit``)."""
        if not self.has_edit_permission(request):
            raise PermissionDenied
        dead_letter = get_object_or_404(DeadLetter, pk=object_id)
        detail = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[dead_letter.pk],
            current_app=self.admin_site.name,
        )
        if dead_letter.status != DeadLetter.Status.PENDING:
            self.message_user(
                request,
                f"#{dead_letter.pk} is {dead_letter.get_status_display()}: only a pending dead letter is edited.",
                messages.WARNING,
            )
            return HttpResponseRedirect(detail)
        initial = {"envelope": dead_letter_envelope_text(dead_letter=dead_letter)}
        form = EditForm(request.POST if request.method == "POST" else None, initial=initial)
        if form.is_valid():
            try:
                result = dead_letter_edit(
                    dead_letter=dead_letter,
                    envelope=form.cleaned_data["envelope"],
                    actor=request.user.get_username(),
                    reason=form.cleaned_data["reason"],
                )
            except InvalidInput as exc:
                for field, errors in exc.field_errors.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                logger.info(
                    "dead letter #%s edited by %s: %s", dead_letter.pk, request.user.get_username(), result.message
                )
                self.message_user(request, f"#{dead_letter.pk}: {result.message}.", messages.SUCCESS)
                return HttpResponseRedirect(detail)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Correct and retry dead letter #{dead_letter.pk}",
            "opts": self.opts,
            "original": dead_letter,
            "form": form,
            "detail_url": detail,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/eventing/deadletter/edit.html", context)

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
                "can_edit": pending and self.has_edit_permission(request),
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
