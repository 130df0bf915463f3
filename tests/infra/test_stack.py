"""The synthesized template, and cdk-nag on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from billow.storage.table import TTL_ATTRIBUTE

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("cdk")]


@pytest.fixture(scope="module")
def synthesized(synthesized_app: tuple[dict[str, Any], Path]) -> tuple[Template, Path]:
    template, out = synthesized_app
    return Template.from_json(template), out


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
                    # idempotency key claims expire through it (billow.storage.models.BillowItem.expires_at)
                    "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
                    "GlobalSecondaryIndexes": [
                        Match.object_like({"IndexName": "GSI1", "Projection": {"ProjectionType": "KEYS_ONLY"}}),
                        Match.object_like({"IndexName": "GSI2", "Projection": {"ProjectionType": "KEYS_ONLY"}}),
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
        "clock_advance.handler.lambda_handler",
        "webhooks.handler.lambda_handler",
        "events_publisher.handler.lambda_handler",
        "events_consumer.handler.lambda_handler",
        "activation.handler.lambda_handler",
        "collector.handler.lambda_handler",
        "sweeper.handler.lambda_handler",
        "dunning.handler.lambda_handler",
    }
    roles = {json.dumps(f["Properties"]["Role"]) for f in functions.values()}
    assert len(roles) == len(functions), "each function has a role of its own"
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


def test_the_api_hands_clock_advances_to_their_function_asynchronously(synthesized: tuple[Template, Path]) -> None:
    """The API may invoke the clock-advance function (and it itself, to continue a long advance),
    nothing else; both know it by name; Lambda retries a failed event twice within an hour."""
    template, _ = synthesized
    functions = {f["Properties"]["Handler"]: f for f in template.find_resources("AWS::Lambda::Function").values()}
    for handler in ("api.handler.lambda_handler", "clock_advance.handler.lambda_handler"):
        variables = functions[handler]["Properties"]["Environment"]["Variables"]
        assert variables["BILLOW_FUNCTION_CLOCK_ADVANCE"] == "billow-test-clock-advance"
    assert "BILLOW_FUNCTION_CLOCK_ADVANCE" not in json.dumps(functions["billing_run.handler.lambda_handler"])
    invokes = [
        (name, json.dumps(statement["Resource"]))
        for name, policy in template.find_resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "lambda:InvokeFunction"
    ]
    granted = sorted(name.split("Role")[0] for name, resource in invokes if "clock-advance" in resource)
    assert granted == ["Functionsapi", "Functionsclockadvance"]
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}
    )


def test_the_daily_schedule_starts_the_billing_run_state_machine(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    machines = template.find_resources(
        "AWS::StepFunctions::StateMachine", {"Properties": {"StateMachineName": "billow-test-billing-run"}}
    )
    [(machine_id, machine)] = machines.items()
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(5 0 * * ? *)",
            "State": "ENABLED",
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Ref": machine_id},
                        "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 21600},
                        "DeadLetterConfig": Match.any_value(),
                    }
                )
            ],
        },
    )
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"


def test_the_billing_run_fans_out_over_every_due_shard_with_a_distributed_map(
    synthesized_app: tuple[dict[str, Any], Path],
) -> None:
    from billow.local.stepfunctions import resolve_definition
    from billow.services.ports import DUE_SHARDS

    template, _ = synthesized_app
    [machine_id] = [
        k
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::StepFunctions::StateMachine"
        and v["Properties"]["StateMachineName"] == "billow-test-billing-run"
    ]
    states = json.loads(resolve_definition(template, machine_id))["States"]
    fan_out = states["BillShards"]
    assert fan_out["Type"] == "Map"
    assert fan_out["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert fan_out["MaxConcurrency"] == DUE_SHARDS
    assert states["PlanShards"]["Parameters"]["shards.$"] == f"States.ArrayRange(0, {DUE_SHARDS - 1}, 1)"
    page = fan_out["ItemProcessor"]["States"]["BillShardPages"]
    assert page["Resource"] == "arn:aws:states:::lambda:invoke"
    assert any("TemporaryFailure" in r["ErrorEquals"] for r in page["Retry"])


def test_every_api_method_requires_the_authorizer_but_stripes_webhooks(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    template.resource_count_is("AWS::ApiGateway::Authorizer", 1)
    template.has_resource_properties(
        "AWS::ApiGateway::Authorizer", {"Type": "REQUEST", "IdentitySource": "method.request.header.Authorization"}
    )
    methods = template.find_resources("AWS::ApiGateway::Method")
    resources = template.find_resources("AWS::ApiGateway::Resource")
    open_methods = {k: m for k, m in methods.items() if m["Properties"]["AuthorizationType"] != "CUSTOM"}
    assert len(methods) > len(open_methods) == 1
    ((_, webhook),) = open_methods.items()
    assert webhook["Properties"]["AuthorizationType"] == "NONE" and webhook["Properties"]["HttpMethod"] == "POST"

    def path_of(ref: dict[str, Any]) -> str:
        if "Ref" not in ref:
            return ""  # the API's root
        resource = resources[ref["Ref"]]["Properties"]
        return path_of(resource["ParentId"]) + "/" + resource["PathPart"]

    assert path_of(webhook["Properties"]["ResourceId"]) == "/webhooks/stripe/{tenant_id}"
    uri = json.dumps(webhook["Properties"]["Integration"]["Uri"])
    functions = template.find_resources("AWS::Lambda::Function")
    (webhooks_function,) = [k for k, f in functions.items() if f["Properties"]["Handler"].startswith("webhooks.")]
    assert webhooks_function in uri and all(k not in uri for k, f in functions.items() if k != webhooks_function), (
        "the webhook route reaches the webhook function only"
    )


def test_the_webhook_function_has_its_own_role_reading_only_rail_secrets(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    functions = template.find_resources("AWS::Lambda::Function")
    (webhooks_function,) = [f for f in functions.values() if f["Properties"]["Handler"].startswith("webhooks.")]
    role = webhooks_function["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p for p in template.find_resources("AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    secrets = [s for s in statements if "secretsmanager:GetSecretValue" in json.dumps(s["Action"])]
    assert len(secrets) == 1 and "billow/test/rail/*" in json.dumps(secrets[0]["Resource"])
    # each charges with the tenant's key (dunning: its retries)
    readers = ("api.handler", "collector.handler", "sweeper.handler", "dunning.handler")
    others = [
        f
        for f in functions.values()
        if f is not webhooks_function and not f["Properties"]["Handler"].startswith(readers)
    ]
    assert others
    for other in others:  # the billing run, the authorizer... read no rail secret
        other_role = other["Properties"]["Role"]["Fn::GetAtt"][0]
        for policy in template.find_resources("AWS::IAM::Policy").values():
            if {"Ref": other_role} in policy["Properties"]["Roles"]:
                assert "secretsmanager" not in json.dumps(policy["Properties"]["PolicyDocument"])


def test_the_api_reads_the_rail_secrets_by_their_prefix(synthesized: tuple[Template, Path]) -> None:
    """Saving a card calls Stripe with the tenant's key: the API function reads exactly this
    stage's rail secrets, and knows their names (billow.gateways.secrets)."""
    template, _ = synthesized
    functions = template.find_resources("AWS::Lambda::Function")
    (api,) = [f for f in functions.values() if f["Properties"]["Handler"] == "api.handler.lambda_handler"]
    assert api["Properties"]["Environment"]["Variables"]["BILLOW_RAIL_SECRETS_PREFIX"] == "billow/test/rail/"
    role = api["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p for p in template.find_resources("AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    secrets = [s for s in statements if "secretsmanager" in json.dumps(s["Action"])]
    assert len(secrets) == 1 and secrets[0]["Action"] == "secretsmanager:GetSecretValue"
    assert "billow/test/rail/*" in json.dumps(secrets[0]["Resource"])


def test_api_gateways_own_refusals_answer_the_one_error_shape(synthesized: tuple[Template, Path]) -> None:
    template, _ = synthesized
    responses = template.find_resources("AWS::ApiGateway::GatewayResponse")
    by_type = {r["Properties"]["ResponseType"]: r["Properties"] for r in responses.values()}
    assert {"UNAUTHORIZED", "ACCESS_DENIED", "THROTTLED", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(by_type)
    unauthorized = json.loads(by_type["UNAUTHORIZED"]["ResponseTemplates"]["application/json"])
    assert unauthorized == {"error": "auth.unauthorized", "message": "missing or invalid API key", "fields": []}
    for kind, code in (("THROTTLED", "request.throttled"), ("DEFAULT_4XX", "gateway.refused")):
        body = by_type[kind]["ResponseTemplates"]["application/json"]
        # API Gateway fills the message in (a quoted JSON string); the rest is the one shape
        parsed = json.loads(body.replace("$context.error.messageString", '"x"'))
        assert parsed == {"error": code, "message": "x", "fields": []}


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


def test_events_bus_stream_publisher_and_consumer_queues(synthesized: tuple[Template, Path]) -> None:
    """docs/events.md: the table's stream feeds the publisher (bisected and retried on error, then
    to a failure queue; batch item failures reported), which puts on billow-<stage>; each consumer
    rule feeds an SQS queue with a dead-letter queue, read with partial batch failures."""
    from billow.gateways.events import CONSUMER_RULES
    from billow.local.events import LocalBus, rules_from_template

    template, _ = synthesized
    template.has_resource_properties(
        "AWS::DynamoDB::Table", {"StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"}}
    )
    template.has_resource_properties("AWS::Events::EventBus", {"Name": "billow-test"})
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [Match.any_value(), "StreamArn"]},
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ParallelizationFactor": 1,
            "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}},
        },
    )
    # Only the kinds events derive from invoke the publisher (a usage record never does).
    from billow.storage.stream import DECODERS

    (stream_mapping,) = [
        m
        for m in template.find_resources("AWS::Lambda::EventSourceMapping").values()
        if "StreamArn" in json.dumps(m["Properties"]["EventSourceArn"])
    ]
    patterns = [json.loads(f["Pattern"]) for f in stream_mapping["Properties"]["FilterCriteria"]["Filters"]]
    assert patterns == [{"dynamodb": {image: {"type": {"S": sorted(DECODERS)}}}} for image in ("NewImage", "OldImage")]
    assert "usage_record" not in DECODERS
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("alleventsqueue"), "Arn"]},
         "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )  # fmt: skip
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {"QueueName": "billow-test-events-all-events", "RedrivePolicy": Match.object_like({"maxReceiveCount": 5})},
    )
    # The collector reads the invoice-issued rule's queue at a bounded concurrency (docs/payments.md).
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("invoiceissuedqueue"), "Arn"]},
         "FunctionName": {"Ref": Match.string_like_regexp("collector")},
         "ScalingConfig": {"MaximumConcurrency": 10},
         "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )  # fmt: skip
    # The rules the local bus routes by are exactly those synthesized.
    rules = rules_from_template(template.to_json())
    expected = {f"billow-test-events-{name}": pattern for name, pattern in CONSUMER_RULES.items()}
    assert {n: p for n, p in rules.items() if n.startswith("billow-test-events-")} == expected
    bus = LocalBus(rules)
    seen: list[tuple[str, str]] = []
    for name in expected:
        bus.subscribe(
            name, lambda event, name=name: seen.append((name.removeprefix("billow-test-events-"), event["detail-type"]))
        )
    detail = '{"id": "evt_1", "version": 1}'
    bus.put([{"Source": "billow", "DetailType": "billow.invoice.issued", "Detail": detail}])
    bus.put([{"Source": "billow", "DetailType": "billow.invoice.paid", "Detail": detail}])
    bus.put([{"Source": "elsewhere", "DetailType": "billow.invoice.issued", "Detail": detail}])
    assert sorted(seen) == [
        ("activation", "billow.invoice.paid"),  # access on payment
        ("all-events", "billow.invoice.issued"),
        ("all-events", "billow.invoice.paid"),
        ("dunning", "billow.invoice.paid"),  # wakes the contact's dunning case
        ("invoice-issued", "billow.invoice.issued"),  # the collector's
    ]
    # The dunning rule's queue feeds the dunning function (its failures, and the cases it opens and wakes).
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("dunningqueue"), "Arn"]},
         "FunctionName": {"Ref": Match.string_like_regexp("dunning")},
         "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )  # fmt: skip
    # Access on payment: invoice.paid also reaches the activation function's own queue.
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("activationqueue"), "Arn"]},
         "FunctionName": {"Ref": Match.string_like_regexp("activation")},
         "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )  # fmt: skip


def test_the_sweep_schedule_fires_the_sweeper_per_group_of_shards_on_its_own_narrow_role(
    synthesized: tuple[Template, Path],
) -> None:
    """Every 15 minutes, one sweeper per group of the sweep index's shards (docs/payments.md#sweep);
    its role reads and writes single items and transactions, queries the table's indexes and reads
    the rail secrets, nothing else (no batch actions, no Scan)."""
    from billow.services.sweep import SWEEP_GROUPS
    from billow_infra.functions import SWEEPER_TABLE_ACTIONS

    template, _ = synthesized
    functions = template.find_resources("AWS::Lambda::Function")
    [(sweeper_id, sweeper)] = [
        (n, f) for n, f in functions.items() if f["Properties"]["Handler"].startswith("sweeper.")
    ]
    rules = [
        r["Properties"]
        for r in template.find_resources("AWS::Events::Rule").values()
        if r["Properties"].get("ScheduleExpression") == "rate(15 minutes)"
    ]
    (rule,) = rules
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": [sweeper_id, "Arn"]}] * SWEEP_GROUPS
    inputs = [json.loads(t["InputTransformer"]["InputTemplate"].replace("<time>", '"t"')) for t in rule["Targets"]]
    assert [(i["group"], i["groups"]) for i in inputs] == [(g, SWEEP_GROUPS) for g in range(SWEEP_GROUPS)]
    role = sweeper["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    table_actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    table_actions = {a for a in table_actions if a.startswith("dynamodb:")}
    assert table_actions == set(SWEEPER_TABLE_ACTIONS)
    assert "dynamodb:Query" in table_actions and "dynamodb:PutItem" in table_actions
    assert not [a for a in table_actions if "Batch" in a or "Scan" in a or "Transact" in a]
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Action": "lambda:InvokeFunction", "Principal": "events.amazonaws.com",
         "FunctionName": {"Fn::GetAtt": [sweeper_id, "Arn"]}},
    )  # fmt: skip


def test_the_dunning_state_machine_parks_on_a_task_token_with_a_days_safety_net(
    synthesized_app: tuple[dict[str, Any], Path],
) -> None:
    """The contract of docs/dunning.md "The flow": every state, each task the dunning function with
    the case and its task name, retried on transient errors and lost races; Park waits for its token
    a day at most, then decides again."""
    from billow.local.stepfunctions import local_definition

    template, _ = synthesized_app
    [machine] = [
        v
        for v in template["Resources"].values()
        if v["Type"] == "AWS::StepFunctions::StateMachine"
        and v["Properties"]["StateMachineName"] == "billow-test-dunning"
    ]
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    definition = json.loads(local_definition(template, "test", "dunning"))
    states = definition["States"]
    assert definition["StartAt"] == "Decide"
    assert set(states) == {"Decide", "Route", "Retry", "Remind", "Deactivate", "Cancel", "End", "Park", "Ended"}
    function = "arn:aws:lambda:us-east-1:123456789012:function:billow-local-dunning"
    case = {"tenant_id.$": "$.tenant_id", "mode.$": "$.mode", "case_id.$": "$.case_id"}
    for name, task in (
        ("Decide", "decide"),
        *((a.title(), a) for a in ("retry", "remind", "deactivate", "cancel", "end")),
    ):
        state = states[name]
        assert state["Resource"] == "arn:aws:states:::lambda:invoke"
        assert state["Parameters"] == {"FunctionName": function, "Payload": {"task": task, **case}}
        assert state["OutputPath"] == "$.Payload" and state["Next"] == "Route"
        [retry] = state["Retry"]
        assert {"ConcurrentModification", "TemporaryFailure", "Lambda.TooManyRequestsException"} <= set(
            retry["ErrorEquals"]
        )
        assert retry["BackoffRate"] > 1
    routes = {c["StringEquals"]: c["Next"] for c in states["Route"]["Choices"] if c["Variable"] == "$.action"}
    assert routes == {
        "retry": "Retry",
        "remind": "Remind",
        "deactivate": "Deactivate",
        "cancel": "Cancel",
        "end": "End",
        "wait": "Park",
        "ended": "Ended",
    }
    assert states["Ended"] == {"Type": "Succeed"}
    park = states["Park"]
    assert park["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert park["Parameters"]["Payload"] == {
        "task": "park",
        **case,
        "wake_seq.$": "$.wake_seq",
        "token.$": "$$.Task.Token",
    }
    assert park["ResultPath"] is None and park["Next"] == "Decide"
    assert park["TimeoutSeconds"] == 86400
    assert [(c["ErrorEquals"], c["Next"]) for c in park["Catch"]] == [(["States.Timeout"], "Decide")]


def test_the_local_stack_runs_the_synthesized_dunning_definition(synthesized_app: tuple[dict[str, Any], Path]) -> None:
    """The artifact the local stack executes (`make definitions`) is what CDK synthesizes now."""
    from billow.local.stepfunctions import LOCAL_MACHINES, definition_file, local_definition

    template, _ = synthesized_app
    assert "dunning" in LOCAL_MACHINES
    for concern in LOCAL_MACHINES:
        assert definition_file(concern).read_text(encoding="utf-8") == local_definition(template, "test", concern), (
            f"{definition_file(concern)} is stale: run `make definitions`"
        )


def test_the_dunning_function_starts_and_resumes_only_its_machine_known_by_name(
    synthesized: tuple[Template, Path],
) -> None:
    template, _ = synthesized
    functions = template.find_resources("AWS::Lambda::Function")
    [(function_id, function)] = [
        (k, f) for k, f in functions.items() if f["Properties"]["Handler"] == "dunning.handler.lambda_handler"
    ]
    assert function["Properties"]["FunctionName"] == "billow-test-dunning"
    machine_arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":states:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":stateMachine:billow-test-dunning",
            ],
        ]
    }
    assert function["Properties"]["Environment"]["Variables"]["BILLOW_DUNNING_STATE_MACHINE_ARN"] == machine_arn
    states_grants = [
        (name, statement)
        for name, policy in template.find_resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "states:" in json.dumps(statement["Action"]) and "Role" in name and name.startswith("Functions")
    ]
    assert [(name.split("Role")[0], s["Action"], s["Resource"]) for name, s in states_grants] == [
        ("Functionsdunning", ["states:StartExecution", "states:SendTaskSuccess"], machine_arn)
    ]
    # Hourly, retried, dead-lettered; its events are EventBridge's "Scheduled Event" envelopes.
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(1 hour)",
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Fn::GetAtt": [function_id, "Arn"]},
                        "RetryPolicy": {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600},
                        "DeadLetterConfig": Match.any_value(),
                    }
                )
            ],
        },
    )
    assert "Input" not in json.dumps(
        [r for r in template.find_resources("AWS::Events::Rule").values() if "rate(1 hour)" in json.dumps(r)]
    )
