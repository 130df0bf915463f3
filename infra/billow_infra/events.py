"""Events out (docs/events.md): the bus `billow-<stage>`, the publisher reading the table's stream,
and per consumer rule an SQS queue with a dead-letter queue feeding its consumer (the example
consumer, or the function `RULE_CONSUMERS` names)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from billow.gateways.events import BUS_ENV, CONSUMER_RECEIVES, CONSUMER_RULES, consumer_of, max_concurrency
from billow.storage.stream import EVENT_KINDS
from constructs import Construct

from billow_infra import naming
from billow_infra.nag import acknowledge

STREAM_RETRIES = 10
"""Attempts per stream batch (halved on each error) before its records go to the failure queue."""


def queue(scope: Construct, construct_id: str, name: str, **kwargs: object) -> sqs.Queue:
    """An SQS queue as Billow makes them: 14 days' retention, TLS only, SQS-managed encryption."""
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=name,
        retention_period=Duration.days(14),
        enforce_ssl=True,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        **kwargs,  # type: ignore[arg-type]
    )


def dead_letter_queue(scope: Construct, construct_id: str, name: str, of: str) -> sqs.Queue:
    """A `queue` that is itself the dead-letter queue `of` something (so has none of its own)."""
    dead_letters = queue(scope, construct_id, name)
    acknowledge(dead_letters, "AwsSolutions-SQS3", f"This queue is itself the dead-letter queue of {of}.")
    return dead_letters


class BillowEvents(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        table: dynamodb.Table,
        publisher: lambda_.Function,
        consumers: Mapping[str, lambda_.Function],
    ) -> None:
        """`consumers`: the functions by concern (each rule's queue feeds `consumer_of(rule)`)."""
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"billow-{stage}")
        publisher.add_environment(BUS_ENV, self.bus.event_bus_name)
        self.bus.grant_put_events_to(publisher)

        self.publish_failures = queue(self, "PublishFailures", naming.name(stage, "events-publish-failures"))
        acknowledge(
            self.publish_failures,
            "AwsSolutions-SQS3",
            "This queue is itself the on-failure destination of the stream's event source mapping.",
        )
        publisher.add_event_source(
            sources.DynamoEventSource(
                table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                bisect_batch_on_error=True,
                retry_attempts=STREAM_RETRIES,
                report_batch_item_failures=True,
                parallelization_factor=1,  # one batch per shard at a time: per-entity order
                on_failure=sources.SqsDlq(self.publish_failures),
                # Only items events derive from reach the publisher: a busy usage meter's records
                # (thousands a second) invoke nothing. A change is matched by its new image, a
                # deletion by its old one.
                filters=[
                    lambda_.FilterCriteria.filter({"dynamodb": {image: {"type": {"S": list(EVENT_KINDS)}}}})
                    for image in ("NewImage", "OldImage")
                ],
            )
        )

        self.queues: dict[str, sqs.Queue] = {}
        for rule_name, pattern in CONSUMER_RULES.items():
            consumer = consumers[consumer_of(rule_name)]
            dead_letters = dead_letter_queue(
                self, f"{rule_name}-dlq", naming.name(stage, f"events-{rule_name}-dlq"), "a consumer's queue"
            )
            rule_queue = queue(
                self,
                f"{rule_name}-queue",
                naming.name(stage, f"events-{rule_name}"),
                visibility_timeout=Duration.seconds(6 * consumer.timeout.to_seconds()) if consumer.timeout else None,
                dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=CONSUMER_RECEIVES, queue=dead_letters),
            )
            # A raw pattern, exactly as CONSUMER_RULES holds it: the local bus routes by the same.
            rule = events.CfnRule(
                self,
                f"{rule_name}-rule",
                name=naming.name(stage, f"events-{rule_name}"),
                description=f"Billow events for the consumer queue {rule_name}",
                event_bus_name=self.bus.event_bus_name,
                event_pattern=pattern,
                state="ENABLED",
                targets=[events.CfnRule.TargetProperty(arn=rule_queue.queue_arn, id="queue")],
            )
            rule_queue.add_to_resource_policy(
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["sqs:SendMessage"],
                    resources=[rule_queue.queue_arn],
                    conditions={"ArnEquals": {"aws:SourceArn": rule.attr_arn}},
                )
            )
            consumer.add_event_source(
                sources.SqsEventSource(
                    rule_queue,
                    batch_size=10,
                    report_batch_item_failures=True,
                    max_concurrency=max_concurrency(rule_name),  # the collector's: Stripe's limits
                )
            )
            self.queues[rule_name] = rule_queue
