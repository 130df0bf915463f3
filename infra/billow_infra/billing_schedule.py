"""The daily billing run: an EventBridge schedule invoking the billing-run function, with retries
and a dead-letter queue for invocations that still fail."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from billow_infra import naming
from billow_infra.nag import acknowledge


class BillingSchedule(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: str, billing_run: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "FailedRuns",
            queue_name=naming.name(stage, "billing-run-failures"),
            retention_period=Duration.days(14),
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
        )
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the billing schedule.",
        )
        self.rule = events.Rule(
            self,
            "Daily",
            rule_name=naming.name(stage, "daily-billing"),
            description="Bill every subscription due today (00:05 UTC; tenants' own time zones decide the day)",
            schedule=events.Schedule.cron(minute="5", hour="0"),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                billing_run, dead_letter_queue=self.dead_letters, retry_attempts=4, max_event_age=Duration.hours(6)
            )
        )
