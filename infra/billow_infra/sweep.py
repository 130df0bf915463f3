"""The sweep's schedule: an EventBridge rule fires the sweeper function every `SWEEP_EVERY`,
once per group of sweep-index shards (`SWEEP_GROUPS` targets, each `{"time", "group", "groups"}`),
so that several sweepers share the shards (billow.services.sweep, docs/payments.md "Sweep")."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from billow.services.sweep import SWEEP_EVERY, SWEEP_GROUPS
from constructs import Construct

from billow_infra import naming

assert SWEEP_GROUPS <= 5, "an EventBridge rule takes at most 5 targets"
EVERY = Duration.minutes(SWEEP_EVERY.total_seconds() // 60)


class Sweep(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: str, sweeper: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Schedule",
            rule_name=naming.name(stage, "sweep"),
            description="Resume payment attempts left live and card refunds left pending",
            schedule=events.Schedule.rate(EVERY),
        )
        for group in range(SWEEP_GROUPS):
            self.rule.add_target(
                targets.LambdaFunction(
                    sweeper,
                    event=events.RuleTargetInput.from_object(
                        {"time": events.EventField.time, "group": group, "groups": SWEEP_GROUPS}
                    ),
                    # A sweep missed is made good by the next one: not retried beyond its period.
                    retry_attempts=2,
                    max_event_age=EVERY,
                )
            )
