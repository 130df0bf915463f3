"""Dunning cases over the API (functions/api/dunning.py, docs/dunning.md "The case over the API"):
read a contact's cases and one case, pause, resume and end it (idempotent, conditioned on the
case's version, the flow woken), only within the caller's tenant and mode; and a contact's
exclusion from dunning."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import runtime
from billow.domain.actions.activate import ACTIVATE
from billow.domain.dunning import Deactivate, DunningCase, DunningPolicy, Remind, Retry, StepKind
from billow.domain.money import Money
from billow.local.stack import add_tenant
from billow.services import actions
from billow.services.actions import ActionRequest
from billow.services.billing import InvoiceNumbers
from billow.services.context import Scope, keyed_ids
from billow.services.dunning import open_case
from billow.services.ports import StoredCase
from billow.storage.repository import DynamoStore

from tests import dunning_support
from tests.dunning_support import Clock, opened, pay, seed_debtor, take_steps
from tests.fake_rail import FakeRail
from tests.support import InProcessClient, make_contact

KEYS = {"test": "bk_test_dunning_api", "live": "bk_live_dunning_api", "other": "bk_test_dunning_other"}
TENANT = "dun-api"
DAY0 = date(2027, 3, 1)
POLICY = DunningPolicy(deactivation_threshold={"USD": Money(5_000, "USD")}, version=2)


class Flows:
    """The `DunningFlows` port: records the tokens resumed and the executions started."""

    def __init__(self) -> None:
        self.resumed: list[str] = []
        self.started: list[str] = []

    def start(self, execution_name: str, payload: dict[str, Any]) -> None:
        self.started.append(execution_name)

    def resume(self, token: str) -> bool:
        self.resumed.append(token)
        return True

    def running(self, execution_name: str) -> bool:
        return True  # the case's execution is alive (parked, or between two tasks)


@pytest.fixture
def flows(monkeypatch: pytest.MonkeyPatch) -> Flows:
    recording = Flows()
    monkeypatch.setitem(vars(runtime), "flows", recording)  # not made: the real one is Step Functions
    return recording


@pytest.fixture
def clients(moto_table: str, flows: Flows) -> Iterator[dict[str, InProcessClient]]:
    add_tenant(TENANT, "Dunning API", KEYS["test"], mode="test")
    add_tenant(TENANT, "Dunning API", KEYS["live"], mode="live")
    add_tenant("dun-other", "Someone else", KEYS["other"], mode="test")
    yield {name: InProcessClient(key) for name, key in KEYS.items()}


def store_case(contact_id: str, sequence: int = 1, currency: str = "USD", mode: str = "test", **flow: Any) -> str:
    """A case as the flow leaves it (opening one is the flow's: this stores it directly)."""
    case = DunningCase.open(contact_id, currency, sequence, POLICY, DAY0)
    case = case.record(Remind(1), DAY0, "owed 80.00 USD").record(Retry((("inv_1", 2),)), date(2027, 3, 2))
    case = case.record(Deactivate(("svc_1",)), date(2027, 3, 15))
    work = DynamoStore().unit_of_work("case")
    flow = {"decided_at": datetime.now(UTC), **flow}  # its execution is live: a wake does not restart it
    work.save_case(Scope(TENANT, mode), StoredCase(case, **flow), 0)
    work.commit()
    return case.id


def test_a_contacts_cases_newest_first_and_one_case_with_its_history(clients: dict[str, InProcessClient]) -> None:
    api = clients["test"]
    contact = make_contact(api)["id"]
    assert api.get(f"/contacts/{contact}/dunning-cases").body == {"contact_id": contact, "items": []}
    first = store_case(contact, 1)
    second = store_case(contact, 2, due=date(2027, 3, 20), decided_on=date(2027, 3, 15))
    listed = api.get(f"/contacts/{contact}/dunning-cases")
    assert listed.status == 200 and [c["id"] for c in listed.body["items"]] == [second, first]

    one = api.get(f"/dunning-cases/{second}")
    assert one.status == 200, one.body
    case = one.body
    assert (case["id"], case["contact_id"], case["currency"], case["status"], case["step"]) == (
        second,
        contact,
        "USD",
        "open",
        "deactivate",
    )
    assert (case["opened_on"], case["due"], case["decided_on"]) == ("2027-03-01", "2027-03-20", "2027-03-15")
    assert case["policy"] == POLICY.for_currency("USD").as_json() and case["policy"]["version"] == 2
    assert [(s["on"], s["kind"], s["targets"]) for s in case["history"]] == [
        ("2027-03-01", "open", []),
        ("2027-03-01", "remind", ["1"]),
        ("2027-03-02", "retry", ["att_inv_1_2"]),
        ("2027-03-15", "deactivate", ["svc_1"]),
    ]
    assert case["deactivated"] == [] and case["cancelled"] == [], "svc_1 is no service of the contact: not held"
    assert (case["retries"], case["reminders_sent"], case["last_reminder"]) == (["att_inv_1_2"], 1, 1)
    assert case["owed"] == {"amount": "0.00", "currency": "USD"}, "no invoice in debt"
    fresh = ("owed", "deactivated")  # read fresh for one case only
    assert {k: v for k, v in listed.body["items"][0].items() if k not in fresh} == {
        k: v for k, v in case.items() if k not in fresh
    }, "a list leaves owed out"
    assert listed.body["items"][0]["deactivated"] == [{"service_id": "svc_1", "on": "2027-03-15"}], "its history's"


def test_a_case_shows_what_its_debt_is_now(clients: dict[str, InProcessClient], tmp_path: Path) -> None:
    api, store = clients["test"], DynamoStore()
    debtor = seed_debtor(store, FakeRail(tmp_path / "rail.db"), tenant_id=TENANT)
    opened = open_case(store, debtor.ctx, debtor.contact_id, "USD", Flows(), clock=Clock())
    assert opened is not None
    case = api.get(f"/dunning-cases/{opened.id}")
    assert case.status == 200 and case.body["owed"] == {"amount": "30.00", "currency": "USD"}, case.body
    paid = api.post(
        f"/invoices/{debtor.invoice.id}/payments",
        {"amount": "30.00", "currency": "USD", "reference": "wire-1", "received_on": "2025-03-04"},
    )
    assert paid.status == 201, paid.body
    after = api.get(f"/dunning-cases/{opened.id}").body
    assert after["owed"] == {"amount": "0.00", "currency": "USD"} and after["status"] == "open", "until it decides"


def test_another_tenants_or_modes_case_is_not_found(clients: dict[str, InProcessClient]) -> None:
    contact = make_contact(clients["test"])["id"]
    case_id = store_case(contact)
    for name in ("live", "other"):
        api = clients[name]
        for method, path in (
            ("GET", f"/dunning-cases/{case_id}"),
            ("POST", f"/dunning-cases/{case_id}/pause"),
            ("POST", f"/dunning-cases/{case_id}/resume"),
            ("POST", f"/dunning-cases/{case_id}/end"),
        ):
            reply = api.request(method, path, {} if method == "POST" else None)
            assert reply.status == 404 and reply.body["error"] == "dunning.case_not_found", (name, path, reply.body)
        listed = api.get(f"/contacts/{contact}/dunning-cases")
        assert listed.status == 404 and listed.body["error"] == "resource.not_found", listed.body
    assert clients["test"].get(f"/dunning-cases/{case_id}").body["status"] == "open", "nothing changed"
    for missing in ("dun_nobody_USD_1", "not-a-case-id"):
        reply = clients["test"].get(f"/dunning-cases/{missing}")
        assert reply.status == 404 and reply.body["error"] == "dunning.case_not_found", reply.body


def test_pause_resume_and_end_are_idempotent_and_wake_the_parked_flow(
    clients: dict[str, InProcessClient], flows: Flows
) -> None:
    api, store, scope = clients["test"], DynamoStore(), Scope(TENANT, "test")
    contact = make_contact(api)["id"]
    assert api.post(f"/contacts/{contact}/test-clock", {"frozen_time": "2027-04-02T10:00:00Z"}).status == 201
    case_id = store_case(contact)
    assert store.park_case(scope, case_id, 0, "token-1")

    paused = api.post(f"/dunning-cases/{case_id}/pause", {"reason": "customer disputes the invoice"})
    assert paused.status == 200, paused.body
    assert paused.body["status"] == "paused" and paused.body["step"] == "pause"
    assert paused.body["history"][-1] == {
        "on": "2027-04-02",
        "kind": "pause",
        "targets": [],
        "outcome": "customer disputes the invoice",
    }
    assert flows.resumed == ["token-1"], "the parked execution is resumed: the flow sees the pause at once"
    woken = store.get_case(scope, case_id)
    assert woken is not None and woken.wake_seq == 1 and woken.token is None
    again = api.post(f"/dunning-cases/{case_id}/pause", {"reason": "again"})
    assert again.status == 200 and again.body == paused.body, "pausing a paused case answers it unchanged"

    resumed = api.post(f"/dunning-cases/{case_id}/resume")  # no body at all
    assert resumed.status == 200 and resumed.body["status"] == "open" and resumed.body["step"] == "resume"
    assert api.post(f"/dunning-cases/{case_id}/resume", {}).body == resumed.body

    assert store.park_case(scope, case_id, store.get_case(scope, case_id).wake_seq, "token-2")  # type: ignore[union-attr]
    nothing_owed = api.post(f"/dunning-cases/{case_id}/end", {"reason": "settled by phone"})
    assert nothing_owed.status == 200 and nothing_owed.body["status"] == "open", nothing_owed.body
    assert flows.resumed[-1] == "token-2", "nothing owed: woken, to end by itself and reactivate"
    assert nothing_owed.body["history"] == resumed.body["history"]


def test_an_operator_ends_a_case_with_debt_reactivating_nothing(
    clients: dict[str, InProcessClient], flows: Flows, tmp_path: Path
) -> None:
    api, store = clients["test"], DynamoStore()
    debtor = seed_debtor(store, FakeRail(tmp_path / "rail.db"), tenant_id=TENANT)
    opened = open_case(store, debtor.ctx, debtor.contact_id, "USD", Flows(), clock=Clock())
    assert opened is not None
    case_id, scope = opened.id, debtor.ctx.scope
    assert store.park_case(scope, case_id, 0, "token-1")
    ended = api.post(f"/dunning-cases/{case_id}/end", {"reason": "settled by phone"})
    assert ended.status == 200 and ended.body["status"] == "ended", ended.body
    assert ended.body["history"][-1]["kind"] == "end"
    assert ended.body["history"][-1]["outcome"] == "ended by an operator: settled by phone; nothing reactivated"
    assert flows.resumed[-1] == "token-1"
    assert api.post(f"/dunning-cases/{case_id}/end").body == ended.body, "ending an ended case answers it"
    for step in ("pause", "resume"):
        refused = api.post(f"/dunning-cases/{case_id}/{step}")
        assert refused.status == 409 and refused.body["error"] == "dunning.case_ended", refused.body
        assert refused.body["fields"] == []
    assert api.get(f"/dunning-cases/{case_id}").body == ended.body, "nothing written by the refusals"


def test_the_write_is_conditioned_on_the_cases_version_and_retried(
    clients: dict[str, InProcessClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow writes the case too (a wake, a park, a step): an operator's change made on a case
    read before such a write is refused by the condition and made again on the case as it is."""
    api, scope = clients["test"], Scope(TENANT, "test")
    contact = make_contact(api)["id"]
    case_id = store_case(contact)
    real = DynamoStore.unit_of_work
    raced: list[int] = []

    def flow_writes_first(self: DynamoStore, what: str) -> Any:
        if not raced:  # between the operator's read and write, the flow records a reminder
            stored = self.get_case(scope, case_id)
            assert stored is not None
            work = real(self, "flow")
            reminded = StoredCase(stored.case.record(Remind(2), date(2027, 3, 8)))
            work.save_case(scope, reminded, stored.version)
            work.commit()
            raced.append(stored.version)
        return real(self, what)

    monkeypatch.setattr(DynamoStore, "unit_of_work", flow_writes_first)
    paused = api.post(f"/dunning-cases/{case_id}/pause")
    assert paused.status == 200, paused.body
    assert [s["kind"] for s in paused.body["history"]][-2:] == ["remind", "pause"], "neither write lost"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"reason": ""}, 422, "request.validation_failed", "reason"),
        ({"reason": "x" * 501}, 422, "request.validation_failed", "reason"),
        ({"why": "typo"}, 422, "request.validation_failed", "why"),
        ("not an object", 422, "request.validation_failed", "body"),
    ],
)
def test_a_bad_body_is_refused_in_the_one_error_shape(
    clients: dict[str, InProcessClient], body: Any, status: int, code: str, field: str
) -> None:
    api = clients["test"]
    case_id = store_case(make_contact(api)["id"])
    for step in ("pause", "resume", "end"):
        reply = api.post(f"/dunning-cases/{case_id}/{step}", body)
        assert reply.status == status and reply.body["error"] == code, reply.body
        assert set(reply.body) == {"error", "message", "fields"} and reply.body["fields"][0]["field"] == field
    malformed = api.post(f"/dunning-cases/{case_id}/pause", raw=b"{nope")
    assert malformed.status == 400 and malformed.body["error"] == "request.malformed_json"
    assert api.get(f"/dunning-cases/{case_id}").body["status"] == "open", "nothing written"


def test_a_contact_is_excluded_from_dunning_by_patch(clients: dict[str, InProcessClient]) -> None:
    api = clients["test"]
    contact = make_contact(api)
    assert contact["dunning_excluded"] is False
    excluded = api.patch(f"/contacts/{contact['id']}", {"dunning_excluded": True})
    assert excluded.status == 200 and excluded.body["dunning_excluded"] is True, excluded.body
    assert api.get(f"/contacts/{contact['id']}").body["dunning_excluded"] is True, "stored"
    kept = api.patch(f"/contacts/{contact['id']}", {"dunning_excluded": None, "name": "Renamed"})
    assert kept.body["dunning_excluded"] is True and kept.body["name"] == "Renamed", "null changes nothing"
    refused = api.patch(f"/contacts/{contact['id']}", {"dunning_excluded": "yes"})
    assert refused.status == 422 and refused.body["fields"][0]["field"] == "dunning_excluded", refused.body
    cleared = api.patch(f"/contacts/{contact['id']}", {"dunning_excluded": False})
    assert cleared.body["dunning_excluded"] is False


def test_excluding_or_readmitting_a_contact_wakes_its_open_cases(
    clients: dict[str, InProcessClient], flows: Flows
) -> None:
    """A case waiting with no day (excluded: as if paused) would not see the flag cleared: the
    change wakes it, so the flow decides again at once."""
    api, store, scope = clients["test"], DynamoStore(), Scope(TENANT, "test")
    contact = make_contact(api)["id"]
    case_id = store_case(contact)
    assert store.park_case(scope, case_id, 0, "parked-while-excluded")
    api.patch(f"/contacts/{contact}", {"name": "Renamed"})
    assert flows.resumed == [], "another change of the contact wakes nothing"
    assert api.patch(f"/contacts/{contact}", {"dunning_excluded": True}).status == 200
    assert flows.resumed == ["parked-while-excluded"]
    woken = store.get_case(scope, case_id)
    assert woken is not None and woken.wake_seq == 1


def test_clearing_a_contacts_exclusion_opens_a_case_for_what_it_owes(
    clients: dict[str, InProcessClient], flows: Flows, tmp_path: Path
) -> None:
    """Excluded when its card was declined, no case opened; clearing the flag opens one at once
    (not days later, when the invoice falls overdue) and starts its execution."""
    api, store = clients["test"], DynamoStore()
    debtor = seed_debtor(store, FakeRail(tmp_path / "rail.db"), tenant_id=TENANT)
    assert api.patch(f"/contacts/{debtor.contact_id}", {"dunning_excluded": True}).status == 200
    assert open_case(store, debtor.ctx, debtor.contact_id, "USD", flows, clock=Clock()) is None, "excluded"
    assert api.get(f"/contacts/{debtor.contact_id}/dunning-cases").body["items"] == []
    assert api.patch(f"/contacts/{debtor.contact_id}", {"dunning_excluded": False}).status == 200
    (case,) = api.get(f"/contacts/{debtor.contact_id}/dunning-cases").body["items"]
    assert case["status"] == "open" and case["currency"] == "USD", case
    assert case["history"][0]["outcome"].startswith("exclusion_cleared; "), "what opened it"
    assert flows.started == [case["id"]], "its execution started"
    assert api.patch(f"/contacts/{debtor.contact_id}", {"dunning_excluded": False}).status == 200
    assert len(api.get(f"/contacts/{debtor.contact_id}/dunning-cases").body["items"]) == 1, "no second case"


DEACTIVATING = {
    "retry_days": [1, 3],
    "reminder_days": [0],
    "grace_days": 2,
    "deactivation_threshold": {"USD": "0.00"},
    "cancel_after_days": 3,
}  # tests.dunning_support.POLICY: reminded on day 0, retried on day 1, deactivated on day 2


def test_a_case_lists_only_what_it_still_holds_deactivated_and_owes_nothing_once_ended(
    clients: dict[str, InProcessClient], flows: Flows, tmp_path: Path
) -> None:
    api, store, rail = clients["test"], DynamoStore(), FakeRail(tmp_path / "rail.db")
    assert api.patch("/settings/dunning", DEACTIVATING).status == 200
    # debt allowed, so that staff may activate a service of a contact in debt (activation.debt_threshold)
    assert api.patch("/settings/subscriptions", {"debt_threshold": {"USD": "1000.00"}}).status == 200
    paid, staff = (seed_debtor(store, rail, tenant_id=TENANT, key=key) for key in ("paid", "staff"))
    for debtor in (paid, staff):
        case_id = opened(store, debtor, flows)
        take_steps(store, debtor, case_id, rail, 3)
        held = api.get(f"/dunning-cases/{case_id}").body
        assert held["deactivated"] == [{"service_id": debtor.service_id, "on": "2025-03-05"}], held
        assert held["owed"] == {"amount": "30.00", "currency": "USD"}

    # Paid: the end reactivates it, and the case no longer lists it, nor a debt.
    paid_case = store.cases_of(paid.ctx.scope, paid.contact_id)[0].id
    pay(store, paid, Clock().days(3))
    assert dunning_support.step(store, paid, paid_case, StepKind.END, Clock().days(3), rail).action == "ended"
    ended = api.get(f"/dunning-cases/{paid_case}").body
    assert ended["status"] == "ended" and ended["deactivated"] == [] and ended["owed"] is None, ended
    (listed,) = api.get(f"/contacts/{paid.contact_id}/dunning-cases").body["items"]
    assert listed["deactivated"] == [], "the list (and the events' case) leave out what its end reactivated"

    # Staff reactivate it: the case no longer holds it (its answer reads the action log).
    staff_case = store.cases_of(staff.ctx.scope, staff.contact_id)[0].id
    request = ActionRequest(ACTIVATE, service_id=staff.service_id, reason="staff")
    ctx = replace(staff.ctx, settings=store.get_settings(TENANT))
    actions.request_action(
        store, ctx, staff.subscription_id, request, clock=Clock().days(3), numbers=InvoiceNumbers(store),
        new_id=keyed_ids(TENANT, "staff-activate"),
    )  # fmt: skip
    taken_back = api.get(f"/dunning-cases/{staff_case}").body
    assert taken_back["status"] == "open" and taken_back["deactivated"] == [], taken_back


def test_a_case_says_its_contact_is_excluded_and_a_paused_case_has_no_due_day(
    clients: dict[str, InProcessClient], flows: Flows
) -> None:
    api = clients["test"]
    contact = api.post("/contacts", {"name": "Ann", "email": "ann@example.com", "dunning_excluded": True})
    assert contact.status == 201 and contact.body["dunning_excluded"] is True, contact.body
    assert api.get(f"/contacts/{contact.body['id']}").body["dunning_excluded"] is True, "stored"
    case_id = store_case(contact.body["id"], due=date(2027, 3, 20), decided_on=date(2027, 3, 15))
    case = api.get(f"/dunning-cases/{case_id}").body
    assert case["excluded"] is True and case["due"] == "2027-03-20", case
    (listed,) = api.get(f"/contacts/{contact.body['id']}/dunning-cases").body["items"]
    assert listed["excluded"] is True
    paused = api.post(f"/dunning-cases/{case_id}/pause").body
    assert paused["status"] == "paused" and paused["due"] is None, "paused: it waits with no day, answered at once"
    assert api.patch(f"/contacts/{contact.body['id']}", {"dunning_excluded": False}).status == 200
    assert api.get(f"/dunning-cases/{case_id}").body["excluded"] is False


def test_a_pause_stands_and_answers_when_step_functions_is_out_of_reach(
    clients: dict[str, InProcessClient], flows: Flows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wake after an operator's committed change fails (Step Functions throttled or out of
    reach): the change is answered, not turned into a 500 over a write already made; the flow
    catches up at its park's timeout or the next wake."""
    api, store, scope = clients["test"], DynamoStore(), Scope(TENANT, "test")
    contact = make_contact(api)["id"]
    case_id = store_case(contact)
    assert store.park_case(scope, case_id, 0, "token-1")

    def unreachable(token: str) -> bool:
        raise ConnectionError("Step Functions out of reach")

    monkeypatch.setattr(flows, "resume", unreachable)
    paused = api.post(f"/dunning-cases/{case_id}/pause", {"reason": "disputed"})
    assert paused.status == 200 and paused.body["status"] == "paused", paused.body
    assert api.get(f"/dunning-cases/{case_id}").body["status"] == "paused"
    cleared = api.patch(f"/contacts/{contact}", {"dunning_excluded": True})
    assert cleared.status == 200 and cleared.body["dunning_excluded"] is True, cleared.body
