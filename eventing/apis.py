from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import paginated_response
from eventing.selectors import event_log_list


class EventLogApi(APIView):
    """The event log, oldest first, filtered by correlation id, aggregate id or type."""

    class FilterSerializer(serializers.Serializer):
        correlation_id = serializers.CharField(required=False, max_length=128)
        aggregate_id = serializers.CharField(required=False, max_length=128)
        type = serializers.CharField(required=False, max_length=100)

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        type = serializers.CharField()
        version = serializers.IntegerField()
        occurred_at = serializers.DateTimeField()
        correlation_id = serializers.CharField()
        causation_id = serializers.CharField(allow_null=True)
        aggregate_type = serializers.CharField()
        aggregate_id = serializers.CharField()
        aggregate_version = serializers.IntegerField()
        data = serializers.DictField()
        stream_entry_id = serializers.CharField()

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
