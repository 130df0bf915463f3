"""cdk-nag v3 acknowledgements: every one carries its reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import Construct, IConstruct


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def logical_id(construct: Construct) -> str:
    """The CloudFormation logical id of the construct's resource, as cdk-nag's finding ids name it."""
    child = construct.node.default_child
    assert child is not None
    return Stack.of(construct).get_logical_id(child)  # type: ignore[arg-type]
