from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import Pagination, paginated_response
from core.converters import BoundedConverter
from core.exceptions import NotFound
from core.openapi import PAGE_NOT_FOUND, STAFF_ONLY, UNAUTHENTICATED, LinkedResponse, bad_request, error, link
from eventing.contract.context import CORRELATION_ID_REGEX, MAX_ID_LENGTH
from eventing.contract.events import MAX_TYPE_LENGTH
from eventing.models import DeadLetter
from eventing.selectors import event_log_list, timeline_get


class EventLogApi(APIView):
    """One business transaction's or one aggregate's logged events, oldest first, optionally of one type.
    Staff only: the log holds every customer's events."""

    permission_classes = [IsAdminUser]
    pagination_class = Pagination

    class FilterSerializer(serializers.Serializer[Any]):
        correlation_id = serializers.CharField(required=False, max_length=MAX_ID_LENGTH)
        aggregate_id = serializers.CharField(required=False, max_length=MAX_ID_LENGTH)
        type = serializers.CharField(required=False, max_length=MAX_TYPE_LENGTH)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            # Each is the key of an index of the log; the whole log is never filtered.
            if not attrs.get("correlation_id") and not attrs.get("aggregate_id"):
                raise serializers.ValidationError(
                    {"correlation_id": ["Give correlation_id or aggregate_id (type narrows either)."]}
                )
            return attrs

    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.CharField()
        type = serializers.CharField()
        version = serializers.IntegerField()
        occurred_at = serializers.DateTimeField()
        correlation_id = serializers.CharField()
        causation_id = serializers.CharField(allow_null=True)
        aggregate_type = serializers.CharField()
        aggregate_id = serializers.CharField()
        aggregate_version = serializers.IntegerField()
        data = serializers.DictField()  # type: ignore[assignment]  # the event payload, not Serializer.data
        stream_entry_id = serializers.CharField(allow_null=True)
        trace_id = serializers.CharField(
            default=None, allow_null=True, help_text="The OpenTelemetry trace the event belongs to (null when off)."
        )

    @extend_schema(
        operation_id="events_list",
        summary="List a transaction's or an aggregate's events (staff)",
        description="From the event log, oldest first: an event is listed once the projections consumer logged it.",
        parameters=[FilterSerializer],
        responses={
            200: LinkedResponse(
                OutputSerializer(many=True),
                "One page of the events.",
                links={
                    "Timeline": link(
                        "timeline_get",
                        "The transaction of the first event.",
                        correlation_id="$response.body#/results/0/correlation_id",
                    )
                },
            ),
            400: bad_request("Neither correlation_id nor aggregate_id, or one too long."),
            401: UNAUTHENTICATED,
            403: STAFF_ONLY,
            404: error(PAGE_NOT_FOUND),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        records = event_log_list(
            correlation_id=params.get("correlation_id"),
            aggregate_id=params.get("aggregate_id"),
            event_type=params.get("type"),
        )
        return paginated_response(queryset=records, serializer_class=self.OutputSerializer, request=request, view=self)


class CorrelationIdConverter(BoundedConverter):
    """A correlation id in a path: what the middleware accepts as one. Anything else was never a correlation
    id (and a NUL byte would fail PostgreSQL's lookup of the dead letters): a 404 before the view."""

    regex = CORRELATION_ID_REGEX


# The timeline's nested parts live at module level: a class body cannot see its sibling nested classes.
class TimelineDeadLetterSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    group = serializers.CharField(source="consumer_group")
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    reason = serializers.CharField()
    attempts = serializers.IntegerField()
    status = serializers.CharField()
    first_failed_at = serializers.DateTimeField()
    last_failed_at = serializers.DateTimeField()
    error = serializers.SerializerMethodField()

    def get_error(self, dead_letter: DeadLetter) -> str:
        if not dead_letter.error_class:
            return dead_letter.error_message
        return f"{dead_letter.error_class}: {dead_letter.error_message}"


class TimelineProcessedSerializer(serializers.Serializer[Any]):
    consumer = serializers.CharField()
    at = serializers.DateTimeField(allow_null=True)


class TimelineEventSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    type = serializers.CharField()
    version = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    producer = serializers.CharField(allow_null=True)
    aggregate_type = serializers.CharField()
    aggregate_id = serializers.CharField()
    aggregate_version = serializers.IntegerField()
    causation_id = serializers.CharField(allow_null=True)
    trace_id = serializers.CharField(
        allow_null=True, help_text="The OpenTelemetry trace the event belongs to (null when tracing was off)."
    )
    data = serializers.DictField()  # type: ignore[assignment]  # the event payload, not Serializer.data
    consumers_expected = serializers.ListField(child=serializers.CharField())
    processed_by = TimelineProcessedSerializer(many=True)
    dead_letters = TimelineDeadLetterSerializer(many=True)


class TimelineApi(APIView):
    """One business transaction: its logged events in time order, which consumers applied each and which
    were expected to, its dead letters, and those of its events that never reached the log. Staff only:
    it shows dead-letter error text and every customer's events."""

    permission_classes = [IsAdminUser]

    class OutputSerializer(serializers.Serializer[Any]):
        correlation_id = serializers.CharField()
        event_count = serializers.IntegerField()
        events = TimelineEventSerializer(many=True)
        dead_letters = TimelineDeadLetterSerializer(many=True)

    @extend_schema(
        operation_id="timeline_get",
        summary="Get a transaction's timeline (staff)",
        tags=["events"],
        responses={
            200: OutputSerializer,
            401: UNAUTHENTICATED,
            403: STAFF_ONLY,
            404: error("Nothing is known about the correlation id: no logged event, no dead letter."),
        },
    )
    def get(self, request: Request, correlation_id: str) -> Response:
        timeline = timeline_get(correlation_id=correlation_id)
        if timeline is None:
            raise NotFound(f"nothing is known about correlation id {correlation_id!r}")
        return Response(self.OutputSerializer(timeline).data)
