"""Obtaining an API token."""

from rest_framework import parsers
from rest_framework.authtoken.views import ObtainAuthToken

from core.parsers import JSONParser


class TokenApi(ObtainAuthToken):
    """A user's API token, for their username and password."""

    # DRF's view, with the project's JSON parser: DRF's own let a deeply nested body through as a 500.
    parser_classes = (parsers.FormParser, parsers.MultiPartParser, JSONParser)
