"""The daily billing run: an EventBridge schedule starts a Step Functions state machine that fans
out over the shards of the due-date index (a distributed map) and has the billing-run function
bill each shard, page after page, until it is done; a last call totals the run and fails the
execution if any subscription could not be billed (they stay due; the next run retries them).

    PlanShards (Pass: shards 0..N-1)
      -> BillShards (Distributed Map, one child execution per shard, MaxConcurrency N)
           BillShardPages (Lambda) -> ShardDone? --no--> BillShardPages
                                               --yes-> ShardTotals
      -> Summarize (Lambda)

The definition this construct synthesizes is what tests/integration/test_billing_state_machine.py
executes in moto's interpreter against DynamoDB Local.
"""

from __future__ import annotations

import json

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from billow_infra import logs, naming
from billow_infra.events import dead_letter_queue
from billow_infra.nag import acknowledge, logical_id

TRANSIENT_ERRORS = ["TemporaryFailure", "Lambda.TooManyRequestsException", "Lambda.ServiceException"]


class BillingRun(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: str, billing_run: lambda_.IFunction, shards: int
    ) -> None:
        super().__init__(scope, construct_id)
        plan = sfn.Pass(
            self,
            "PlanShards",
            parameters={
                "time": sfn.JsonPath.string_at("$.time"),
                "shards": sfn.JsonPath.array_range(0, shards - 1, 1),
            },
        )
        page = tasks.LambdaInvoke(
            self,
            "BillShardPages",
            lambda_function=billing_run,
            payload=sfn.TaskInput.from_json_path_at("$"),
            payload_response_only=False,
            output_path="$.Payload",
            retry_on_service_exceptions=False,
        )
        page.add_retry(errors=TRANSIENT_ERRORS, interval=Duration.seconds(5), max_attempts=6, backoff_rate=2)
        shard_done = (
            sfn.Choice(self, "ShardDone?")
            .when(sfn.Condition.boolean_equals("$.done", True), sfn.Pass(self, "ShardTotals", output_path="$.totals"))
            .otherwise(page)
        )
        fan_out = sfn.DistributedMap(
            self,
            "BillShards",
            items_path="$.shards",
            item_selector={
                "time": sfn.JsonPath.string_at("$.time"),
                "shard": sfn.JsonPath.number_at("$$.Map.Item.Value"),
            },
            max_concurrency=shards,
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_path="$.results",
        )
        fan_out.item_processor(page.next(shard_done))
        summarize = tasks.LambdaInvoke(
            self,
            "Summarize",
            lambda_function=billing_run,
            payload=sfn.TaskInput.from_object(
                {"time": sfn.JsonPath.string_at("$.time"), "results": sfn.JsonPath.list_at("$.results")}
            ),
            output_path="$.Payload",
            retry_on_service_exceptions=False,
        )
        log_group = logs.log_group(self, f"/aws/vendedlogs/states/{naming.name(stage, 'billing-run')}")
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=naming.name(stage, "billing-run"),
            definition_body=sfn.DefinitionBody.from_chainable(plan.next(fan_out).next(summarize)),
            timeout=Duration.hours(6),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL),
        )
        machine_name = {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": logical_id(self.state_machine)}]}]}
        account = "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>"
        execution_arn = f"{account}:execution:{json.dumps(machine_name, separators=(',', ':'))}"
        for rule_id, reason in (
            ("Resource::*", "Step Functions log delivery and X-Ray actions support no resource-level permissions."),
            (
                f"Resource::<{logical_id(billing_run)}.Arn>:*",
                "Invoking the billing-run function's versions and aliases (CDK's LambdaInvoke grant).",
            ),
            (f"Resource::{execution_arn}:*", "The distributed map manages its own child executions, and only them."),
            (f"Resource::{execution_arn}/*:*", "The distributed map reads its own map-run executions, and only them."),
        ):
            acknowledge(self.state_machine, f"AwsSolutions-IAM5[{rule_id}]", reason)

        self.dead_letters = dead_letter_queue(
            self, "FailedStarts", naming.name(stage, "billing-run-failures"), "the billing schedule"
        )
        self.rule = events.Rule(
            self,
            "Daily",
            rule_name=naming.name(stage, "daily-billing"),
            description="Bill every subscription due today (00:05 UTC; tenants' own time zones decide the day)",
            schedule=events.Schedule.cron(minute="5", hour="0"),
        )
        self.rule.add_target(
            targets.SfnStateMachine(
                self.state_machine,
                dead_letter_queue=self.dead_letters,
                retry_attempts=4,
                max_event_age=Duration.hours(6),
            )
        )
