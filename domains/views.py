"""Domains: claims, DNS verification, deletion."""

from __future__ import annotations

import uuid

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conduit.browsable import BrowsableActionMixin
from conduit.net import client_ip
from conduit.schema import error, errors, no_content
from domains import selectors, services
from domains.dns import VERIFY_LABEL
from domains.models import Domain
from domains.serializers import CreateDomainClaimRequestSerializer, DomainResponseSerializer

DOMAIN_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Domain ID"
)


def _body(domain: Domain, request: Request) -> dict:
    return DomainResponseSerializer(domain, context={"account": request.user}).data


class DomainsView(APIView):
    @extend_schema(
        operation_id="listDomains",
        tags=["Domains"],
        summary="List domains",
        description="The account's domains, verified or not, and the public domains any "
        "account may put webhook addresses on. A public domain of another account shows an "
        "empty `verification_token`.",
        responses={
            200: OpenApiResponse(
                DomainResponseSerializer(many=True), description="List of domains"
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        domains = selectors.domain_list(account=request.user)
        body = DomainResponseSerializer(domains, many=True, context={"account": request.user})
        return Response(body.data)

    @extend_schema(
        operation_id="createDomainClaim",
        tags=["Domains"],
        summary="Claim a domain",
        description="Claims a domain name and returns the `verification_token` to publish "
        "in DNS before calling verifyDomain. The name is stored lower-case in IDNA form "
        "(`Bücher.Example` becomes `xn--bcher-kva.example`). Several accounts may claim a "
        "name until one of them verifies it; 409 when this account already claimed it or "
        "another account has verified it.",
        request=CreateDomainClaimRequestSerializer,
        responses={
            201: OpenApiResponse(DomainResponseSerializer, description="Domain claimed"),
            **errors(401),
            409: error(409, "Domain already claimed"),
            422: error(422, "Invalid domain name"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CreateDomainClaimRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        domain = services.domain_claim(
            account=request.user, name=serializer.validated_data["name"], ip=client_ip(request)
        )
        return Response(_body(domain, request), status=status.HTTP_201_CREATED)


class DomainView(APIView):
    @extend_schema(
        operation_id="getDomain",
        tags=["Domains"],
        summary="Get domain",
        description="One of the account's domains, or a public domain (read-only, with an "
        "empty `verification_token` when another account owns it).",
        responses={
            200: OpenApiResponse(DomainResponseSerializer, description="Domain details"),
            **errors(401, 404),
        },
        parameters=[DOMAIN_ID],
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        domain = selectors.get_domain_for_account(
            account=request.user, domain_id=id, include_public=True
        )
        return Response(_body(domain, request))

    @extend_schema(
        operation_id="deleteDomain",
        tags=["Domains"],
        summary="Delete domain",
        description="Deletes the domain and every webhook whose address is on it. Another "
        "account's domain, public or not, is a 404.",
        responses={204: no_content("Domain deleted"), **errors(401, 404)},
        parameters=[DOMAIN_ID],
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:
        domain = selectors.get_domain_for_account(account=request.user, domain_id=id)
        services.domain_delete(domain=domain, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DomainVerifyView(BrowsableActionMixin, APIView):
    """Checks the domain's TXT and MX records and marks it verified when both are right."""

    def form_page_data(self, request: Request, id: uuid.UUID) -> dict:
        domain = selectors.get_domain_for_account(account=request.user, domain_id=id)
        return _body(domain, request)

    @extend_schema(
        operation_id="verifyDomain",
        tags=["Domains"],
        summary="Trigger DNS TXT verification for a domain",
        description=(
            "Looks up two DNS records for the domain, and marks it verified when both are "
            "right:\n\n"
            f"- **TXT** `{VERIFY_LABEL}.<domain>` whose value is the domain's "
            "`verification_token` (other TXT records at that name are ignored);\n"
            f"- **MX** `<domain>` pointing at `{settings.CONDUIT_MX_HOST}` with priority "
            f"{services.MX_PRIORITY} (other MX records may stay).\n\n"
            "When a check fails the answer is 422 with code `verification_failed`: `error` "
            "says which check failed, what was expected and what was found, and `details` "
            "holds the message per check (`txt`, `mx`). A DNS timeout is reported the same "
            "way; try again later. Once verified, other accounts' unverified claims of the "
            "name are deleted, and calling this again returns the domain without a lookup. "
            "Another account's domain, public or not, is a 404."
        ),
        request=None,
        responses={
            200: OpenApiResponse(DomainResponseSerializer, description="Domain verified"),
            **errors(401, 404),
            422: error(422, "DNS TXT record not found or does not match"),
        },
        parameters=[DOMAIN_ID],
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        domain = selectors.get_domain_for_account(account=request.user, domain_id=id)
        domain = services.domain_verify(domain=domain, ip=client_ip(request))
        return Response(_body(domain, request))
