"""The Billow stack: table, functions, API, billing schedule, sweep schedule, dunning flows."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Stack
from billow.gateways.flows import DUNNING
from billow.services.ports import DUE_SHARDS
from constructs import Construct

from billow_infra import naming
from billow_infra.api import BillowApi
from billow_infra.billing_run import BillingRun
from billow_infra.dunning import Dunning
from billow_infra.events import BillowEvents
from billow_infra.functions import BillowFunctions
from billow_infra.sweep import Sweep
from billow_infra.table import BillowTable


class BillowStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        shared_layer_dir: Path,
        dependencies_layer_dir: Path,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        table = BillowTable(self, "Storage", table_name=naming.name(stage, "table")).table
        functions = BillowFunctions(
            self,
            "Functions",
            stage=stage,
            table=table,
            shared_layer_dir=shared_layer_dir,
            dependencies_layer_dir=dependencies_layer_dir,
        )
        api = BillowApi(
            self,
            "Api",
            stage=stage,
            handler=functions.by_concern["api"],
            authorizer_function=functions.by_concern["authorizer"],
            webhooks_function=functions.by_concern["webhooks"],
        )
        billing = BillingRun(
            self, "Billing", stage=stage, billing_run=functions.by_concern["billing-run"], shards=DUE_SHARDS
        )
        Sweep(self, "Sweep", stage=stage, sweeper=functions.by_concern["sweeper"])
        dunning = Dunning(self, "Dunning", stage=stage, function=functions.by_concern[DUNNING])
        bus = BillowEvents(
            self,
            "Events",
            stage=stage,
            table=table,
            publisher=functions.by_concern["events-publisher"],
            consumers=functions.by_concern,
        ).bus

        CfnOutput(self, "ApiUrl", value=api.api.url, description="Base URL of the Billow API")
        CfnOutput(self, "TableName", value=table.table_name)
        CfnOutput(self, "EventBusName", value=bus.event_bus_name)
        CfnOutput(self, "BillingRunFunctionName", value=functions.by_concern["billing-run"].function_name)
        CfnOutput(self, "BillingRunStateMachineArn", value=billing.state_machine.state_machine_arn)
        CfnOutput(self, "DunningStateMachineArn", value=dunning.state_machine.state_machine_arn)
