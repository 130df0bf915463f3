"""Entitlements: what a contact may use right now (docs/credits.md, "Entitlements").

Price terms carry **features** (on/off, e.g. `sso`, `api_access`) and **limits** (whole numbers,
e.g. `seats: 10`, `projects: 50`, `storage_gb: 100`). A contact is entitled to what its
**effective** services' terms grant: a service in its trial grants (it is effective), one that is
draft (not started, or waiting for its first payment), not effective (deactivated by dunning),
paused or cancelled grants nothing. Across services, features are the union and limits add up (two
add-ons of 50 projects give 100). A service's quantity does not multiply a limit (a per-seat plan
says its seats as a limit). The answer follows the stored state: an upgrade applies its new terms'
grants at once, a deactivation removes them, a payment's re-activation restores them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING

from billow.domain.errors import InvalidInput
from billow.domain.rules import ServiceState

if TYPE_CHECKING:  # subscriptions import the catalog, which checks its grants here
    from billow.domain.subscriptions import Service, Subscription

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FEATURES = MAX_LIMITS = 50
MAX_LIMIT = 10**12


def check_grants(
    features: Iterable[object], limits: Mapping[object, object]
) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """Price terms' features and limits, checked: names of a-z, 0-9 and _ (starting with a letter),
    at most 50 of each, limits whole numbers from 0 to 10^12. Returns them sorted."""
    names = list(features)
    if len(names) > MAX_FEATURES or len(limits) > MAX_LIMITS:
        raise InvalidInput(
            f"at most {MAX_FEATURES} features and {MAX_LIMITS} limits", field="features", code="entitlements.too_many"
        )
    for name in [*names, *limits]:
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInput(
                f"a feature or limit name is 1 to 64 of a-z, 0-9, _ starting with a letter: {name!r}",
                field="features",
                code="entitlements.name",
            )
    for name, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LIMIT:
            raise InvalidInput(
                f"limit '{name}' is a whole number from 0 to {MAX_LIMIT}",
                field=f"limits.{name}",
                code="entitlements.limit",
            )
    checked = {str(name) for name in names}
    return tuple(sorted(checked)), tuple(sorted((str(k), int(v)) for k, v in limits.items()))  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class Grantor:
    """One service granting entitlements."""

    subscription_id: str
    service_id: str
    product_id: str
    terms_id: str
    features: tuple[str, ...]
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Entitlements:
    features: frozenset[str]
    limits: Mapping[str, int]
    granted_by: tuple[Grantor, ...]

    @property
    def as_key(self) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
        """What is granted, comparable (an event is derived when it changes)."""
        return tuple(sorted(self.features)), tuple(sorted(self.limits.items()))


GRANTING = frozenset({ServiceState.EFFECTIVE})


def entitlements(grantors: Iterable[Grantor]) -> Entitlements:
    features: set[str] = set()
    limits: dict[str, int] = {}
    found = tuple(grantors)
    for grantor in found:
        features.update(grantor.features)
        for name, value in grantor.limits:
            limits[name] = limits.get(name, 0) + value
    return Entitlements(frozenset(features), MappingProxyType(dict(sorted(limits.items()))), found)


def grantors_of(subscription: Subscription, today: date | None = None) -> list[Grantor]:
    """The subscription's services that grant something (effective, with features or limits); given
    `today`, not those whose end has come (a cancellation at the cycle's end, a term not renewed)
    though the run that ends them has not executed yet."""
    return [
        Grantor(subscription.id, s.id, s.product_id, s.terms.id, s.terms.features, s.terms.limits)
        for s in subscription.services
        if s.state in GRANTING and (s.terms.features or s.terms.limits) and (today is None or _running(s, today))
    ]


def _running(service: Service, today: date) -> bool:
    ended = service.end_date is not None and service.end_date <= today
    expired = service.term_end is not None and not service.auto_renew and service.term_end <= today
    return service.start_date <= today and not ended and not expired
