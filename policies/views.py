"""SMTP security policies: what the ingress demands of senders to a webhook."""

from __future__ import annotations

import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conduit.net import client_ip
from conduit.schema import errors, no_content
from policies import selectors, services
from policies.checks import MASKED_PASSWORD, MIN_PASSWORD_LENGTH
from policies.serializers import (
    CreateSmtpSecurityPolicyRequestSerializer,
    SmtpSecurityPolicyResponseSerializer,
    UpdateSmtpSecurityPolicyRequestSerializer,
)

_FIELDS_NOTE = (
    "`allowed_source_ips` takes IPv4/IPv6 addresses and CIDR networks; "
    "`allowed_spf_domains` and `allowed_dkim_domains` take domain names (subdomains "
    "included) and apply only with `require_spf` / `require_dkim`. Lists may be separated "
    "by commas, spaces or newlines and are stored normalised (comma-separated, "
    "duplicates removed, IDNA names). `smtp_credentials` takes `username:password` "
    "entries separated by commas or newlines (usernames unique, passwords at least "
    f"{MIN_PASSWORD_LENGTH} characters); passwords are stored hashed and shown as "
    f"`username:{MASKED_PASSWORD}`. "
    "`require_smtp_auth` needs at least one credential. Every problem is reported at "
    "once: 422 with `details` per field."
)

POLICY_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="SMTP security policy ID"
)


class SmtpPoliciesView(APIView):
    @extend_schema(
        operation_id="listSmtpSecurityPolicies",
        tags=["SMTP Policies"],
        summary="List SMTP security policies",
        description="The account's policies, by name. Passwords are never returned.",
        responses={
            200: OpenApiResponse(
                SmtpSecurityPolicyResponseSerializer(many=True),
                description="List of SMTP security policies",
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        policies = selectors.smtp_policy_list(account=request.user)
        return Response(SmtpSecurityPolicyResponseSerializer(policies, many=True).data)

    @extend_schema(
        operation_id="createSmtpSecurityPolicy",
        tags=["SMTP Policies"],
        summary="Create SMTP security policy",
        description="Creates a policy; attach it to webhooks with their "
        "`smtp_security_policy_id`. Fields left out default to false or empty. " + _FIELDS_NOTE,
        request=CreateSmtpSecurityPolicyRequestSerializer,
        responses={
            201: OpenApiResponse(
                SmtpSecurityPolicyResponseSerializer, description="Policy created"
            ),
            **errors(401, 422),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CreateSmtpSecurityPolicyRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = services.smtp_policy_create(
            account=request.user, ip=client_ip(request), **serializer.validated_data
        )
        body = SmtpSecurityPolicyResponseSerializer(policy).data
        return Response(body, status=status.HTTP_201_CREATED)


class SmtpPolicyView(APIView):
    @extend_schema(
        operation_id="getSmtpSecurityPolicy",
        tags=["SMTP Policies"],
        summary="Get SMTP security policy",
        responses={
            200: OpenApiResponse(
                SmtpSecurityPolicyResponseSerializer, description="Policy details"
            ),
            **errors(401, 404),
        },
        parameters=[POLICY_ID],
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        policy = selectors.get_smtp_policy_for_account(account=request.user, policy_id=id)
        return Response(SmtpSecurityPolicyResponseSerializer(policy).data)

    @extend_schema(
        operation_id="updateSmtpSecurityPolicy",
        tags=["SMTP Policies"],
        summary="Update SMTP security policy",
        description="Changes the fields sent; fields left out keep their values. "
        "`smtp_credentials`, when sent, replaces the whole list: entries left out are "
        "removed, and `username:********` (as shown in responses) keeps that user's stored "
        "password. " + _FIELDS_NOTE,
        request=UpdateSmtpSecurityPolicyRequestSerializer,
        responses={
            200: OpenApiResponse(
                SmtpSecurityPolicyResponseSerializer, description="Updated policy"
            ),
            **errors(401, 404, 422),
        },
        parameters=[POLICY_ID],
    )
    def put(self, request: Request, id: uuid.UUID) -> Response:
        policy = selectors.get_smtp_policy_for_account(account=request.user, policy_id=id)
        serializer = UpdateSmtpSecurityPolicyRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = services.smtp_policy_update(
            policy=policy, data=serializer.validated_data, ip=client_ip(request)
        )
        return Response(SmtpSecurityPolicyResponseSerializer(policy).data)

    @extend_schema(
        operation_id="deleteSmtpSecurityPolicy",
        tags=["SMTP Policies"],
        summary="Delete SMTP security policy",
        description="Deletes the policy. Webhooks that used it stay, without a policy: "
        "their mail is no longer checked against it.",
        responses={204: no_content("Policy deleted"), **errors(401, 404)},
        parameters=[POLICY_ID],
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:
        policy = selectors.get_smtp_policy_for_account(account=request.user, policy_id=id)
        services.smtp_policy_delete(policy=policy, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
