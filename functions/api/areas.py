"""The API's route areas (catalog, contacts, orders, billing, settings, actions, receivables): each is
a module of `api` with a `router`, imported by a container when a request first needs it, not by its
cold start. A container that only ever serves contacts never compiles the action routes.

Which area serves which routes is known before any is imported, from `routes.json` beside this
module (written by `make openapi` from the complete app; a unit test fails when it is stale). A
request loads every area that has a route at its path under *any* method, so the resolver then holds
every route that could match that path: its answer — the route, 405 with `Allow`, or 404 — is the
one the complete app gives. Registration order cannot change an answer either: no path is matched by
two dynamic routes of one method (tests/unit/test_route_areas.py), and Powertools tries static
routes before dynamic ones.
"""

from __future__ import annotations

import gc
import importlib
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from re import Pattern
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

AREAS = (
    "catalog",
    "contacts",
    "orders",
    "billing",
    "settings",
    "actions",
    "receivables",
    "payment_methods",
    "dunning",
    "usage",
    "credits",
    "top_ups",
)
"""Every route area, in the order the complete app registers them (a new area is added here)."""
INDEX_FILE = Path(__file__).with_name("routes.json")


def route_index(app: APIGatewayRestResolver) -> dict[str, list[list[str]]]:
    """Each area's routes, `[method, rule]`, in the complete app's registration order (what
    `routes.json` holds)."""
    index: dict[str, list[list[str]]] = {}
    for route in app._static_routes + app._dynamic_routes:
        area = route.func.__module__.removeprefix("api.")
        index.setdefault(area, []).append([route.method, route.path])
    return index


def route_index_json(app: APIGatewayRestResolver) -> str:
    """`route_index` as JSON, one route per line (so a diff shows the routes added or removed)."""
    areas = [
        f"  {json.dumps(area)}: [\n" + ",\n".join(f"    {json.dumps(route)}" for route in routes) + "\n  ]"
        for area, routes in route_index(app).items()
    ]
    return "{\n" + ",\n".join(areas) + "\n}\n"


class RouteAreas:
    """The areas of one resolver: which are loaded, and loading those a path needs."""

    def __init__(self, app: APIGatewayRestResolver, index: dict[str, list[list[str]]]) -> None:
        self._app = app
        self._rules = {area: [rule for _, rule in index.get(area, [])] for area in AREAS}
        self._patterns: dict[str, list[Pattern[str]]] = {}
        self._loaded: set[str] = set()
        self._lock = threading.Lock()  # the local gateway serves requests on threads

    @classmethod
    def from_index_file(cls, app: APIGatewayRestResolver, path: Path = INDEX_FILE) -> RouteAreas:
        return cls(app, json.loads(path.read_text(encoding="utf-8")))

    @property
    def loaded(self) -> set[str]:
        return set(self._loaded)

    def load_for(self, path: str) -> None:
        """Load the areas not loaded yet that have a route at `path`."""
        unloaded = [area for area in self._rules if area not in self._loaded]
        self.load(area for area in unloaded if any(p.match(path) for p in self._compiled(area)))

    def load_all(self) -> APIGatewayRestResolver:
        """Every area, in `AREAS` order, whatever the index says: the complete app (the OpenAPI
        document, `routes.json` itself, tests over every route)."""
        self.load(AREAS)
        return self._app

    def load(self, areas: Iterable[str]) -> None:
        """Import and register `areas` (those not loaded yet). As while a handler imports
        (`runtime.imported`), the garbage collector waits, then skips what the import made."""
        with self._lock:
            wanted = [area for area in areas if area not in self._loaded]
            if not wanted:
                return
            collecting = gc.isenabled()
            gc.disable()
            try:
                for area in wanted:
                    module: Any = importlib.import_module(f"api.{area}")
                    self._app.include_router(module.router)
                    self._loaded.add(area)
            finally:
                gc.freeze()
                if collecting:
                    gc.enable()

    def _compiled(self, area: str) -> list[Pattern[str]]:
        """The area's rules as the resolver matches them (its own compiler), made on first need."""
        if area not in self._patterns:
            self._patterns[area] = [self._app._compile_regex(rule) for rule in self._rules[area]]
        return self._patterns[area]
