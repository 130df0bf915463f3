"""Dunning: one execution of this state machine per case (named after the case), and the hourly
schedule that wakes the cases whose day came (docs/dunning.md "The flow").

    Decide -> Route --retry|remind|deactivate|cancel|end--> <that task> -> Route
                    --wait--> Park (Lambda .waitForTaskToken, 1 day at most) -> Decide
                    --ended--> Ended
                    Park timed out (States.Timeout) -> Decide

Every task is the dunning function (`{"task": ..., "tenant_id", "mode", "case_id"}`), returning
the next decision `{"tenant_id", "mode", "case_id", "action", "due", "wake_seq"}`. There is no
real-time `Wait` state: `Park` hands its task token to the function, which stores it on the case;
the hourly schedule, a test clock's advance and the events that can change the decision resume it
(SendTaskSuccess), so a test-clock contact's case advances with its clock. The timeout is only the
safety net: `Decide` re-reads everything.

The definition this construct synthesizes is what the local stack executes (the artifact
shared/billow/local/definitions/dunning.asl.json, `make definitions`; tests/infra checks it is
current).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from billow.gateways.flows import DUNNING, WAKE_EVERY
from constructs import Construct

from billow_infra import logs, naming
from billow_infra.billing_run import TRANSIENT_ERRORS
from billow_infra.events import dead_letter_queue
from billow_infra.nag import acknowledge, logical_id

TASK_ERRORS = [*TRANSIENT_ERRORS, "ConcurrentModification"]
"""Retried with backoff: Lambda's throttles and service errors, and a case changed under a task
(its version-conditioned write lost: the retry re-reads and re-decides)."""
PARK_TIMEOUT = Duration.days(1)
"""The safety net: a parked execution decides again after a day even if no wake came."""
EVERY = Duration.minutes(WAKE_EVERY.total_seconds() // 60)
ACTIONS = ("retry", "remind", "deactivate", "cancel", "end")
"""The decisions carried out by a task of their own (`wait` parks, `ended` succeeds)."""


class Dunning(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: str, function: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        case = {
            "tenant_id": sfn.JsonPath.string_at("$.tenant_id"),
            "mode": sfn.JsonPath.string_at("$.mode"),
            "case_id": sfn.JsonPath.string_at("$.case_id"),
        }

        def task(state: str, name: str, **extra: object) -> tasks.LambdaInvoke:
            invoke = tasks.LambdaInvoke(
                self,
                state,
                lambda_function=function,
                payload=sfn.TaskInput.from_object({"task": name, **case, **extra}),
                payload_response_only=False,
                output_path="$.Payload",
                retry_on_service_exceptions=False,
            )
            invoke.add_retry(errors=TASK_ERRORS, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)
            return invoke

        decide = task("Decide", "decide")
        park = tasks.LambdaInvoke(
            self,
            "Park",
            lambda_function=function,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            payload=sfn.TaskInput.from_object(
                {
                    "task": "park",
                    **case,
                    "wake_seq": sfn.JsonPath.number_at("$.wake_seq"),
                    "token": sfn.JsonPath.task_token,
                }
            ),
            result_path=sfn.JsonPath.DISCARD,  # resumed with "{}": the decision passes through
            task_timeout=sfn.Timeout.duration(PARK_TIMEOUT),
            retry_on_service_exceptions=False,
        )
        park.add_retry(errors=TASK_ERRORS, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2)
        park.add_catch(decide, errors=["States.Timeout"], result_path="$.timeout")
        park.next(decide)

        route = sfn.Choice(self, "Route")
        for action in ACTIONS:
            route.when(sfn.Condition.string_equals("$.action", action), task(action.title(), action).next(route))
        route.when(sfn.Condition.string_equals("$.action", "wait"), park)
        route.when(sfn.Condition.string_equals("$.action", "ended"), sfn.Succeed(self, "Ended"))

        machine_name = naming.name(stage, DUNNING)
        log_group = logs.log_group(self, f"/aws/vendedlogs/states/{machine_name}")
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(decide.next(route)),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL),
        )
        for rule_id, reason in (
            ("Resource::*", "Step Functions log delivery and X-Ray actions support no resource-level permissions."),
            (
                f"Resource::<{logical_id(function)}.Arn>:*",
                "Invoking the dunning function's versions and aliases (CDK's LambdaInvoke grant).",
            ),
        ):
            acknowledge(self.state_machine, f"AwsSolutions-IAM5[{rule_id}]", reason)

        self.dead_letters = dead_letter_queue(
            self, "FailedWakes", naming.name(stage, "dunning-wake-failures"), "the dunning wake"
        )
        self.rule = events.Rule(
            self,
            "Wake",
            rule_name=naming.name(stage, "dunning-wake"),
            description="Wake the dunning cases whose day came (contacts without a test clock)",
            schedule=events.Schedule.rate(EVERY),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                function,
                dead_letter_queue=self.dead_letters,
                retry_attempts=4,
                max_event_age=EVERY,  # a wake missed is made good by the next one
            )
        )
