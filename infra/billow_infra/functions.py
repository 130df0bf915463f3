"""The Lambda functions: one role each, with only the table actions that function needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from billow.gateways.flows import DUNNING, state_machine_env
from billow.gateways.invoke import CLOCK_ADVANCE, function_env, handler_of
from constructs import Construct

from billow_infra import logs, naming
from billow_infra.environment import function_environment
from billow_infra.nag import acknowledge
from billow_infra.packaging import ASSET_EXCLUDES, FUNCTIONS_DIR

RUNTIME = lambda_.Runtime.PYTHON_3_14
WEBHOOK_TIMEOUT_SECONDS = 29
"""Shorter than the lease a delivery holds on the event it applies (billow.services.webhooks.LEASE):
a lease that ran out belongs to a delivery that is dead."""
RAIL_SECRETS = "billow/{stage}/rail/*"
"""The tenants' rail secrets in Secrets Manager (one per tenant, read once per container)."""

READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"]
WRITE_ACTIONS = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
SWEEPER_TABLE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:ConditionCheckItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)
"""The sweeper's: its index and the items it resumes (single reads and Queries, conditional writes
alone and in transactions, a credit marker deleted when a failed refund's credit comes back), no
batch reads or writes."""


@dataclass(frozen=True)
class FunctionSpec:
    concern: str  # "api" -> billow-<stage>-api
    handler: str  # "api.handler.lambda_handler"
    description: str
    table_actions: tuple[str, ...]
    timeout: Duration
    memory_mb: int = 512
    invokes: tuple[str, ...] = ()
    """Concerns whose functions this one invokes asynchronously (InvocationType=Event): it gets
    their names in its environment (billow.gateways.invoke) and lambda:InvokeFunction on them."""
    invoked_async: bool = False
    """Invoked with events only: Lambda retries a failed event twice, within an hour."""
    reads_rail_secrets: bool = False
    """Reads the tenants' payment-rail secrets (Secrets Manager, `RAIL_SECRETS` names)."""
    flows: tuple[str, ...] = ()
    """Concerns of the state machines this function starts and resumes (billow.gateways.flows):
    their ARNs in its environment, StartExecution and SendTaskSuccess on them."""


SPECS = (
    FunctionSpec(
        "api",
        "api.handler.lambda_handler",
        "Billow REST API",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.seconds(29),
        invokes=(CLOCK_ADVANCE,),
        reads_rail_secrets=True,  # saving a contact's card calls Stripe with the tenant's key
    ),
    FunctionSpec(
        "authorizer",
        "authorizer.handler.lambda_handler",
        "Billow API key authorizer",
        ("dynamodb:GetItem",),
        Duration.seconds(5),
        256,
    ),
    FunctionSpec(
        "billing-run",
        "billing_run.handler.lambda_handler",
        "Billow daily billing run",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.minutes(15),
        1024,
    ),
    FunctionSpec(
        CLOCK_ADVANCE,
        handler_of(CLOCK_ADVANCE),
        "Billow test-clock advance: bills what became due, off the request path",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.minutes(5),
        invokes=(CLOCK_ADVANCE,),  # hands the rest of a long advance to a fresh invocation
        invoked_async=True,
    ),
    FunctionSpec(
        DUNNING,
        handler_of(DUNNING),
        "Billow dunning: the steps of each case's flow, its wakes (hourly, clock advances, payment events)",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.seconds(60),
        reads_rail_secrets=True,  # a retry charges the card with the tenant's key
        flows=(DUNNING,),  # starts a case's execution, resumes it when it is woken
    ),
    FunctionSpec(
        "webhooks",
        "webhooks.handler.lambda_handler",
        "Billow Stripe webhooks: verified, recorded once by event id, applied (outside the API-key authorizer)",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.seconds(WEBHOOK_TIMEOUT_SECONDS),
        reads_rail_secrets=True,
    ),
    FunctionSpec(
        "events-publisher",
        "events_publisher.handler.lambda_handler",
        "Billow events: publishes the table's committed changes to the bus",
        (),  # the stream read is granted by its event source mapping
        Duration.minutes(1),
        256,
    ),
    FunctionSpec(
        "collector",
        "collector.handler.lambda_handler",
        "Billow collection: charges each issued invoice on its tenant's payment rail",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.seconds(60),
        reads_rail_secrets=True,
    ),
    FunctionSpec(
        "sweeper",
        "sweeper.handler.lambda_handler",
        "Billow sweep: resumes payment attempts left live and card refunds left pending (every 15 minutes)",
        SWEEPER_TABLE_ACTIONS,
        Duration.minutes(5),
        reads_rail_secrets=True,  # resumes charges and refunds with the tenant's key
    ),
    FunctionSpec(
        "events-consumer",
        "events_consumer.handler.lambda_handler",
        "Billow events: example consumer of a rule's queue",
        (),
        Duration.seconds(30),
        256,
    ),
    FunctionSpec(
        "activation",
        "activation.handler.lambda_handler",
        "Billow access on payment: activates the services waiting for a paid invoice (invoice.paid)",
        (*READ_ACTIONS, *WRITE_ACTIONS),
        Duration.seconds(30),
        512,
    ),
)


class BillowFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        table: dynamodb.Table,
        shared_layer_dir: Path,
        dependencies_layer_dir: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        layers = [
            lambda_.LayerVersion(
                self,
                "DependenciesLayer",
                code=lambda_.Code.from_asset(str(dependencies_layer_dir)),
                compatible_runtimes=[RUNTIME],
                description="Billow third-party dependencies",
            ),
            lambda_.LayerVersion(
                self,
                "SharedLayer",
                code=lambda_.Code.from_asset(str(shared_layer_dir)),
                compatible_runtimes=[RUNTIME],
                description="The billow package",
            ),
        ]
        code = lambda_.Code.from_asset(str(FUNCTIONS_DIR), exclude=ASSET_EXCLUDES)
        self.by_concern: dict[str, lambda_.Function] = {}
        for spec in SPECS:
            self.by_concern[spec.concern] = self._function(spec, stage, table, code, layers)

    def _function(
        self,
        spec: FunctionSpec,
        stage: str,
        table: dynamodb.Table,
        code: lambda_.Code,
        layers: list[lambda_.ILayerVersion],
    ) -> lambda_.Function:
        function_name = naming.name(stage, spec.concern)
        scope = Construct(self, spec.concern)
        log_group = logs.log_group(scope, f"/aws/lambda/{function_name}")
        role = iam.Role(
            scope,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{function_name}: its log group, X-Ray, and {len(spec.table_actions)} table actions",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            )
        )
        xray = iam.PolicyStatement(actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"], resources=["*"])
        role.add_to_policy(xray)
        table_resources = [table.table_arn, f"{table.table_arn}/index/*"]
        if spec.table_actions:
            role.add_to_policy(iam.PolicyStatement(actions=list(spec.table_actions), resources=table_resources))
        if spec.reads_rail_secrets:
            secrets = Stack.of(self).format_arn(
                service="secretsmanager",
                resource="secret",
                resource_name=RAIL_SECRETS.format(stage=stage),
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secrets]))
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:"
                + RAIL_SECRETS.format(stage=stage)
                + "]",
                "One secret per tenant, created as tenants join: scoped to this stage's rail secrets by name.",
            )
        environment = function_environment(table.table_name)
        if spec.reads_rail_secrets:  # billow.gateways.secrets: the secret of tenant t is <prefix>t
            environment["BILLOW_RAIL_SECRETS_PREFIX"] = RAIL_SECRETS.format(stage=stage).removesuffix("*")
        for concern in spec.invokes:
            # By name, not by construct: a function may invoke itself without a dependency cycle.
            target = naming.name(stage, concern)
            arn = Stack.of(self).format_arn(
                service="lambda", resource="function", resource_name=target, arn_format=ArnFormat.COLON_RESOURCE_NAME
            )
            role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[arn]))
            environment[function_env(concern)] = target
        for concern in spec.flows:
            # By name, not by construct: the machine invokes this very function (no dependency cycle).
            machine = Stack.of(self).format_arn(
                service="states",
                resource="stateMachine",
                resource_name=naming.name(stage, concern),
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            role.add_to_policy(
                iam.PolicyStatement(actions=["states:StartExecution", "states:SendTaskSuccess"], resources=[machine])
            )
            environment[state_machine_env(concern)] = machine
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions.",
        )
        if spec.table_actions:
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::<{self._logical_table_ref(table)}.Arn>/index/*]",
                "Queries the table's own GSIs (due index, by-id, listings); scoped to this one table.",
            )
        function = lambda_.Function(
            scope,
            "Function",
            function_name=function_name,
            description=spec.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=spec.handler,
            code=code,
            layers=layers,
            role=role,
            timeout=spec.timeout,
            memory_size=spec.memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            environment=environment,
        )
        if spec.invoked_async:
            function.configure_async_invoke(retry_attempts=2, max_event_age=Duration.hours(1))
        return function

    @staticmethod
    def _logical_table_ref(table: dynamodb.Table) -> str:
        child = table.node.default_child
        assert child is not None
        return Stack.of(table).get_logical_id(child)  # type: ignore[arg-type]
