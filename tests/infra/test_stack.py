"""The synthesized template, and cdk-nag on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Match, Template

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, Path]:
    from app import build_app  # infra/app.py

    out = tmp_path_factory.mktemp("cdk.out")
    deps = tmp_path_factory.mktemp("deps")
    (deps / "python").mkdir()
    app, stack = build_app(outdir=str(out), context={"stage": "test", "dependencies_layer": str(deps)})
    app.synth()  # raises if cdk-nag reports an unacknowledged error
    return Template.from_stack(stack), out


def test_table_keys_indexes_and_protection(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "TableName": "billow-test-table",
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [
                        {"AttributeName": "PK", "KeyType": "HASH"},
                        {"AttributeName": "SK", "KeyType": "RANGE"},
                    ],
                    "DeletionProtectionEnabled": True,
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "GlobalSecondaryIndexes": [
                        Match.object_like({"IndexName": "GSI1", "Projection": {"ProjectionType": "KEYS_ONLY"}}),
                        Match.object_like({"IndexName": "GSI2", "Projection": {"ProjectionType": "ALL"}}),
                        Match.object_like({"IndexName": "GSI3", "Projection": {"ProjectionType": "ALL"}}),
                    ],
                }
            ),
        },
    )


def test_functions_with_their_own_roles(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    functions = template.find_resources("AWS::Lambda::Function")
    handlers = {f["Properties"]["Handler"]: f for f in functions.values()}
    assert set(handlers) == {
        "api.handler.lambda_handler",
        "authorizer.handler.lambda_handler",
        "billing_run.handler.lambda_handler",
    }
    roles = {json.dumps(f["Properties"]["Role"]) for f in functions.values()}
    assert len(roles) == 3, "each function has a role of its own"
    assert all(f["Properties"]["TracingConfig"] == {"Mode": "Active"} for f in functions.values())
    assert all(len(f["Properties"]["Layers"]) == 2 for f in functions.values())


def test_the_authorizer_may_only_read_single_items(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    policies = template.find_resources("AWS::IAM::Policy")
    authorizer = [p for name, p in policies.items() if "authorizer" in name]
    (policy,) = authorizer
    table_actions = [
        s["Action"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if "dynamodb" in json.dumps(s["Action"])
    ]
    assert table_actions == ["dynamodb:GetItem"]
    for p in policies.values():
        for statement in p["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Action"] != "dynamodb:*" and "*" not in json.dumps(statement["Action"])


def test_the_daily_schedule_invokes_the_billing_run(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(5 0 * * ? *)",
            "State": "ENABLED",
            "Targets": [
                Match.object_like(
                    {
                        "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 21600},
                        "DeadLetterConfig": Match.any_value(),
                    }
                )
            ],
        },
    )


def test_every_api_method_requires_the_authorizer(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.resource_count_is("AWS::ApiGateway::Authorizer", 1)
    template.has_resource_properties(
        "AWS::ApiGateway::Authorizer", {"Type": "REQUEST", "IdentitySource": "method.request.header.Authorization"}
    )
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert methods
    assert all(m["Properties"]["AuthorizationType"] == "CUSTOM" for m in methods.values())


def test_cdk_nag_reports_no_unacknowledged_errors(synthesized: tuple[Template, Path]) -> None:
    _, out = synthesized
    report = json.loads((out / "validation-report.json").read_text())
    violations = [v for plugin in report["pluginReports"] for v in plugin.get("violations", [])]
    assert violations == []


def test_cdk_nag_does_fail_synth_on_a_violation(tmp_path: Path) -> None:
    """Proof that the check above can fail: an unencrypted, non-TLS queue breaks the synth."""
    from app import build_app
    from aws_cdk import aws_sqs as sqs

    (tmp_path / "deps" / "python").mkdir(parents=True)
    app, stack = build_app(
        outdir=str(tmp_path / "out"), context={"stage": "bad", "dependencies_layer": str(tmp_path / "deps")}
    )
    sqs.Queue(stack, "CarelessQueue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        app.synth()
