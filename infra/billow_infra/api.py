"""The REST API: every route behind the API-key REQUEST authorizer, proxied to the API function,
except Stripe's webhooks (signed by Stripe), on a function of their own."""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from billow_infra import naming
from billow_infra.nag import acknowledge

UNAUTHORIZED = {"error": "auth.unauthorized", "message": "missing or invalid API key", "fields": []}
# API Gateway's own refusals in the API's one error shape (docs/errors.md); a None status keeps
# API Gateway's. `$context.error.messageString` is its message, already a quoted JSON string.
GATEWAY_ERRORS = (
    (apigw.ResponseType.UNAUTHORIZED, "401", json.dumps(UNAUTHORIZED)),
    (apigw.ResponseType.ACCESS_DENIED, "401", json.dumps(UNAUTHORIZED)),
    (
        apigw.ResponseType.THROTTLED,
        "429",
        '{"error": "request.throttled", "message": $context.error.messageString, "fields": []}',
    ),
    (
        apigw.ResponseType.DEFAULT_4_XX,
        None,
        '{"error": "gateway.refused", "message": $context.error.messageString, "fields": []}',
    ),
    (
        apigw.ResponseType.DEFAULT_5_XX,
        None,
        '{"error": "service.internal_error", "message": $context.error.messageString, "fields": []}',
    ),
)


class BillowApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        handler: lambda_.IFunction,
        authorizer_function: lambda_.IFunction,
        webhooks_function: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=naming.name(stage, "api"),
            description="Billow back-office API",
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies carry personal and payment data
                throttling_rate_limit=200,
                throttling_burst_limit=400,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        authorizer = apigw.RequestAuthorizer(
            self,
            "ApiKeyAuthorizer",
            handler=authorizer_function,
            identity_sources=[apigw.IdentitySource.header("Authorization")],
            results_cache_ttl=Duration.minutes(5),
        )
        integration = apigw.LambdaIntegration(handler)
        options = {"authorizer": authorizer, "authorization_type": apigw.AuthorizationType.CUSTOM}
        self.api.root.add_method("ANY", integration, **options)
        self.api.root.add_proxy(
            default_integration=integration, default_method_options=apigw.MethodOptions(**options), any_method=True
        )
        # Stripe's webhooks: signed by Stripe (the function verifies the signature with the
        # tenant's endpoint secret), so outside the API-key authorizer, on a function of its own.
        webhook = (
            self.api.root.add_resource("webhooks")
            .add_resource("stripe")
            .add_resource("{tenant_id}")
            .add_method(
                "POST", apigw.LambdaIntegration(webhooks_function), authorization_type=apigw.AuthorizationType.NONE
            )
        )
        acknowledge(
            webhook,
            "AwsSolutions-APIG4",
            "Stripe cannot send an API key: each delivery is authenticated by its Stripe-Signature (HMAC-SHA256 "
            "with the tenant's endpoint secret, 5-minute tolerance), verified by the webhook function.",
        )
        for response_type, status, template in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                f"{response_type.response_type}Response",
                type=response_type,
                status_code=status,
                templates={"application/json": template},
            )
        acknowledge(
            self.api,
            "AwsSolutions-APIG2",
            "Bodies are validated by the API function (pydantic, field-level 4xx errors); "
            "a gateway model would duplicate the schema and give worse errors.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "WAF is an account-level choice with its own cost; docs/deploy.md shows how to attach one.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Back-office callers authenticate with per-tenant API keys through the REQUEST authorizer.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-wide API Gateway logging role; AWS offers only this managed policy for it.",
        )
