"""POST-only actions a signed-in person can run from the browsable API.

A browser that opens such an action's URL (GET, asking for text/html) gets the
browsable API's page with a form for the POST, prefilled with the request body's
defaults, instead of a bare 405. Every other client still gets 405
``method_not_allowed`` with ``Allow: POST, OPTIONS``, and that GET is no operation
of the API (it is left out of the OpenAPI schema).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response


class BrowsableActionMixin:
    """Mix into an APIView with a ``post``; set ``form_serializer_class`` to the
    request body's serializer (none for an action without a body) and implement
    ``form_page_data`` (what the page shows above the form; it also checks that the
    object exists and belongs to the caller, as the POST would)."""

    form_serializer_class: type[serializers.Serializer] | None = None

    def form_page_data(self, request: Request, **kwargs: object) -> object:
        raise NotImplementedError

    @property
    def allowed_methods(self) -> list[str]:
        # GET (and Django's HEAD beside it) only serves the form page: the Allow
        # header stays the API's own.
        return [m for m in super().allowed_methods if m not in ("GET", "HEAD")]  # type: ignore[misc]

    def get_serializer(self, *args: object, **kwargs: object) -> serializers.Serializer:
        """The browsable API's form: the body's fields with their defaults."""
        if self.form_serializer_class is None:
            return serializers.Serializer()
        fields = self.form_serializer_class().fields
        defaults = {
            name: field.default
            for name, field in fields.items()
            if field.default is not serializers.empty
        }
        return self.form_serializer_class(instance=defaults)

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        if not isinstance(request.accepted_renderer, BrowsableAPIRenderer):
            raise MethodNotAllowed(request.method)
        return Response(self.form_page_data(request, **kwargs))
