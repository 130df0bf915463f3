"""Dunning: what Billow does about a contact's unpaid debt, day by day (docs/dunning.md).

A tenant's `DunningPolicy` (its settings, versioned) says when a failed charge is retried, when the
customer is reminded, how long the grace period is, over what debt the services billed to it are
deactivated, and after how long deactivated services are cancelled.

A `DunningCase` follows one contact's debt in one currency, from the first failed charge (or the
first overdue invoice) until nothing is owed. It keeps the policy it was opened under (`policy`,
with its `version`), so a change of settings applies to cases opened after it, and its history:
each step with its day, what it touched and its outcome; the services it deactivated and
cancelled, the reminders it sent and the retries it asked for are read from that history alone.

`decide(case, facts, today)` is the one rule: from the case, what is true now (`CaseFacts`: the
contact's invoices in the currency, the latest charge attempt of each, its services billed to
the debt, its classification, its credit) and the contact's today (its test clock's, in test mode),
it answers the next step: `End`, `Retry`, `Remind`, `Deactivate`, `Cancel` or `Wait`. It is a pure
function: deciding twice on the same facts and day gives the same decision, and a step, once done,
is recorded (`DunningCase.record`) or shows in the facts, so the next decision moves on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any, ClassVar

from billow.domain.collection import AttemptStatus, attempt_id
from billow.domain.errors import Conflict, InvalidInput
from billow.domain.money import Money, amounts_per_currency, sum_money
from billow.domain.rules import ServiceState

MAX_DAYS = 365
"""The longest any dunning delay may be (a schedule's day, the grace period, the cancellation delay)."""
MAX_SCHEDULE = 10
"""The most retries, or reminders, a schedule may list."""
MAX_CLASSIFICATIONS = 50


# -- the policy ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DunningPolicy:
    """A tenant's dunning rules (`TenantSettings.dunning`, `PATCH /settings/dunning`)."""

    retry_days: tuple[int, ...] = (1, 3, 5, 7)
    """Days after an invoice's first failed charge on which the charge is retried (strictly
    increasing, 1 to 365). A hard decline is not retried on them: it waits for a new method."""
    reminder_days: tuple[int, ...] = (0, 7, 14)
    """Days after the case opened on which the customer is reminded (strictly increasing, 0 to 365)."""
    grace_days: int = 14
    """Days after the case opened before any service is deactivated (0 to 365); a subscription's own
    grace period (`grace_until`, the set-grace-period action) protects its services longer."""
    deactivation_threshold: Mapping[str, Money] = field(default_factory=dict)
    """Per currency: services are deactivated only while the debt in it is over this amount (0:
    any debt). A currency not listed is never deactivated (nor cancelled): dunning only retries and
    reminds there."""
    cancel_after_days: int | None = None
    """Days a service stays deactivated by dunning before it is cancelled (1 to 365); None: never."""
    excluded_from_deactivation: tuple[str, ...] = ()
    """Account classifications whose services are never deactivated (so never cancelled either)."""
    excluded_from_cancellation: tuple[str, ...] = ()
    """Account classifications whose deactivated services are never cancelled."""
    cancel_with_fees: bool = True
    """A cancellation by dunning charges what a cancellation charges (a cancellation fee inside the
    contract); off, it charges none."""
    version: int = 0
    """Bumped by every change of the policy (`changed`); each case keeps the version it follows."""

    def __post_init__(self) -> None:
        _check_schedule(self.retry_days, "retry_days", 1, code="dunning.retry_days")
        _check_schedule(self.reminder_days, "reminder_days", 0, code="dunning.reminder_days")
        if not 0 <= self.grace_days <= MAX_DAYS:
            raise InvalidInput(f"grace_days is 0 to {MAX_DAYS}", field="grace_days", code="dunning.grace_days")
        if self.cancel_after_days is not None and not 1 <= self.cancel_after_days <= MAX_DAYS:
            raise InvalidInput(
                f"cancel_after_days is 1 to {MAX_DAYS}, or null (never cancel)",
                field="cancel_after_days",
                code="dunning.cancel_after_days",
            )
        for currency, threshold in self.deactivation_threshold.items():
            if threshold.currency != currency or threshold.is_negative:
                raise InvalidInput(
                    "a deactivation threshold is a non-negative amount in its own currency",
                    field=f"deactivation_threshold.{currency}",
                    code="dunning.threshold",
                )
        for name in ("excluded_from_deactivation", "excluded_from_cancellation"):
            names = getattr(self, name)
            if len(names) > MAX_CLASSIFICATIONS or len(set(names)) != len(names) or not all(names):
                raise InvalidInput(
                    f"{name} lists at most {MAX_CLASSIFICATIONS} different, non-empty classifications",
                    field=name,
                    code="dunning.classifications",
                )
        if not isinstance(self.cancel_with_fees, bool):
            raise InvalidInput("cancel_with_fees is true or false", field="cancel_with_fees")
        if self.version < 0:
            raise InvalidInput("a policy version is not negative", field="version")

    # -- its JSON form as the API shows and takes it (storage has its own: billow.storage.codec) ---
    def as_json(self) -> dict[str, Any]:
        return {
            "retry_days": list(self.retry_days),
            "reminder_days": list(self.reminder_days),
            "grace_days": self.grace_days,
            "deactivation_threshold": {c: m.amount_str() for c, m in sorted(self.deactivation_threshold.items())},
            "cancel_after_days": self.cancel_after_days,
            "excluded_from_deactivation": list(self.excluded_from_deactivation),
            "excluded_from_cancellation": list(self.excluded_from_cancellation),
            "cancel_with_fees": self.cancel_with_fees,
            "version": self.version,
        }

    def changed(self, changes: Mapping[str, Any]) -> DunningPolicy:
        """The policy with `changes` (JSON form, as `as_json` shows it) applied: the next version
        when anything changed, itself otherwise."""
        unknown = set(changes) - set(self.as_json()) | ({"version"} & set(changes))
        if unknown:
            raise InvalidInput("not a dunning rule", field=sorted(unknown)[0], code="dunning.unknown_rule")
        values: dict[str, Any] = dict(changes)
        for name in ("retry_days", "reminder_days", "excluded_from_deactivation", "excluded_from_cancellation"):
            if name in values:
                values[name] = tuple(values[name])
        if "deactivation_threshold" in values:
            values["deactivation_threshold"] = amounts_per_currency(
                values["deactivation_threshold"], "deactivation_threshold"
            )
        new = replace(self, **values)
        return self if new == self else replace(new, version=self.version + 1)

    # -- what it says ---------------------------------------------------------------------------
    def threshold(self, currency: str) -> Money | None:
        """The debt in `currency` over which services are deactivated; None: never."""
        return self.deactivation_threshold.get(currency)

    def for_currency(self, currency: str) -> DunningPolicy:
        """The policy as a case in `currency` keeps it: the other currencies' thresholds left out."""
        kept = {c: m for c, m in self.deactivation_threshold.items() if c == currency}
        return replace(self, deactivation_threshold=kept)


def _check_schedule(days: Sequence[int], name: str, first: int, *, code: str) -> None:
    if (
        len(days) > MAX_SCHEDULE
        or any(not isinstance(d, int) or isinstance(d, bool) or not first <= d <= MAX_DAYS for d in days)
        or any(a >= b for a, b in pairwise(days))
    ):
        raise InvalidInput(
            f"{name} lists at most {MAX_SCHEDULE} days, each {first} to {MAX_DAYS}, strictly increasing",
            field=name,
            code=code,
        )


DEFAULT_DUNNING = DunningPolicy()


# -- what is true now ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """An invoice's latest charge attempt (`collection.PaymentAttempt`), as dunning reads it: the
    latest attempt charging it (its own, or a whole-debt attempt another invoice started), but
    `number` is the highest number of its own attempts, so `number + 1` is a new attempt id."""

    number: int
    status: AttemptStatus
    hard_decline: bool
    on: date
    """The contact's day the attempt was made."""


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """One of the contact's open (owed) invoices in the case's currency."""

    invoice_id: str
    amount_due: Money
    due_date: date
    first_failed_on: date | None = None
    """The contact's day its first charge failed (declined, or nothing could be charged); None:
    never charged, or not failed (it is in debt from the day after its due date)."""
    latest_attempt: AttemptFacts | None = None
    new_method: bool = False
    """The method it would be charged with now (its subscription's, else the contact's default) is
    not the one its latest attempt was made with, or was saved after it: a card saved but not made
    the default changes nothing; making it the default does."""

    def __post_init__(self) -> None:
        latest = self.latest_attempt
        if latest is not None and latest.status in _FAILED and self.first_failed_on is None:
            raise ValueError("an invoice whose charge failed has the day it first failed")

    def in_debt(self, today: date) -> bool:
        """Owed and delinquent: its charge failed, or it is overdue."""
        if self.amount_due.minor <= 0:
            return False
        failed = self.first_failed_on is not None and self.first_failed_on <= today
        return failed or today > self.due_date


_FAILED = frozenset({AttemptStatus.FAILED, AttemptStatus.NOT_COLLECTABLE})


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """A service billed by one of the invoices, or deactivated by the case."""

    service_id: str
    subscription_id: str
    state: ServiceState
    grace_until: date | None
    """Its subscription's grace period: no deactivation before this day."""
    invoice_ids: frozenset[str] = frozenset()
    """The open invoices that bill it."""
    stopped_by: str | None = None
    """The dunning case whose deactivation left it in its current state (its subscription's
    action log: the last state change was that case's system deactivation); None: any other (an
    operator's deactivation, or reactivation, since)."""

    def stopped_by_case(self, case_id: str) -> bool:
        """Not effective because `case_id` deactivated it, and nothing changed it since."""
        return self.state is ServiceState.NOT_EFFECTIVE and self.stopped_by == case_id


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What `decide` reads, fresh before each decision: one contact's world in the case's currency,
    its days on the contact's clock."""

    currency: str
    invoices: tuple[InvoiceFacts, ...] = ()
    services: tuple[ServiceFacts, ...] = ()
    classification: str | None = None
    """The contact's account classification."""
    credit: Money | None = None
    """The contact's unused credit in the currency (None: none)."""
    excluded: bool = False
    """The contact is excluded from dunning (`Contact.dunning_excluded`, set by an operator): its
    case behaves as paused, doing nothing but end when nothing is owed."""

    def __post_init__(self) -> None:
        for invoice in self.invoices:
            if invoice.amount_due.currency != self.currency:
                raise ValueError(f"invoice {invoice.invoice_id} is not in {self.currency}")
        if self.credit is not None and (self.credit.currency != self.currency or self.credit.is_negative):
            raise ValueError(f"credit is a non-negative amount in {self.currency}")

    def in_debt(self, today: date) -> tuple[InvoiceFacts, ...]:
        return tuple(i for i in self.invoices if i.in_debt(today))

    def due(self, today: date) -> Money:
        """What the invoices in debt still owe, gross of the contact's credit: what retrying their
        charges would charge, together."""
        return sum_money([i.amount_due for i in self.in_debt(today)], self.currency)

    def owed(self, today: date) -> Money:
        """The debt: what the invoices in debt still owe, less the contact's credit; never below 0."""
        debt = self.due(today)
        if self.credit is not None:
            debt = debt - self.credit
        return debt if not debt.is_negative else Money.zero(self.currency)

    def service(self, service_id: str) -> ServiceFacts | None:
        return next((s for s in self.services if s.service_id == service_id), None)


# -- decisions ----------------------------------------------------------------------------------------
class StepKind(StrEnum):
    OPEN = "open"
    RETRY = "retry"
    REMIND = "remind"
    DEACTIVATE = "deactivate"
    CANCEL = "cancel"
    END = "end"
    PAUSE = "pause"  # by an operator: nothing is done until it is resumed, but ending
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class End:
    """Nothing is owed: reactivate the services this case deactivated (and no other), and end it."""

    reactivate: tuple[str, ...] = ()
    kind: ClassVar[str] = StepKind.END


@dataclass(frozen=True, slots=True)
class Retry:
    """Charge these invoices again: (invoice id, attempt number), each number never used before."""

    attempts: tuple[tuple[str, int], ...]
    kind: ClassVar[str] = StepKind.RETRY


@dataclass(frozen=True, slots=True)
class Remind:
    """Remind the customer: reminder `number` of the schedule (1 = its first day)."""

    number: int
    kind: ClassVar[str] = StepKind.REMIND


@dataclass(frozen=True, slots=True)
class Deactivate:
    services: tuple[str, ...]
    on: date | None = field(default=None, compare=False)
    """The day it fell due (its grace ended), not before the case's last step on services or its
    status (`DunningCase.acted_on`): a clock jumping over it deactivates as of that day, as going
    day by day would. None: today."""
    kind: ClassVar[str] = StepKind.DEACTIVATE


@dataclass(frozen=True, slots=True)
class Cancel:
    services: tuple[str, ...]
    with_fees: bool
    on: date | None = field(default=None, compare=False)
    """The day it fell due (deactivated `cancel_after_days` before), as `Deactivate.on`."""
    kind: ClassVar[str] = StepKind.CANCEL


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do today: decide again on `until` (the contact's day), or, when None, only when
    something happens (a payment, a new failure, a new payment method, a service changed)."""

    until: date | None
    kind: ClassVar[str] = "wait"


Decision = End | Retry | Remind | Deactivate | Cancel | Wait


# -- the case -----------------------------------------------------------------------------------------
class CaseStatus(StrEnum):
    OPEN = "open"
    PAUSED = "paused"  # by an operator: it only ends (nothing owed), until resumed
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a case: its day, what it touched (attempt ids, service ids, the reminder's
    number) and its outcome."""

    on: date
    kind: StepKind
    targets: tuple[str, ...] = ()
    outcome: str = ""

    @property
    def owed(self) -> Money | None:
        """A reminder's debt (net of credit), when it was recorded with one (`reminder_outcome`);
        None otherwise."""
        return self._reminded(_OWED)

    @property
    def due(self) -> Money | None:
        """What a reminder's invoices in debt still owed, gross of credit (what their retries
        charge), when it was recorded with it; None otherwise."""
        return self._reminded(_DUE)

    @property
    def credit(self) -> Money | None:
        """The contact's unused credit when a reminder was sent, when recorded with it; None otherwise."""
        return self._reminded(_CREDIT)

    def _reminded(self, label: str) -> Money | None:
        if self.kind != StepKind.REMIND:
            return None
        part = next((p for p in self.outcome.split(_SEP) if p.startswith(label)), None)
        if part is None:
            return None
        amount, _, currency = part.removeprefix(label).partition(" ")
        try:
            return Money.parse(amount, currency)
        except (InvalidInput, TypeError, ValueError):
            return None

    @property
    def why(self) -> str | None:
        """Why an end step ended the case: `operator`, or why nothing was owed (`paid`, `credited`,
        `voided`, `written_off`, as `end_outcome` recorded it; `nothing_owed` when it says several
        or none); None for any other step."""
        if self.kind != StepKind.END:
            return None
        if self.by_operator:
            return "operator"
        head = self.outcome.split(_SEP, 1)[0]
        reasons = head.removeprefix(NOTHING_OWED).strip(" ()").split(", ") if head.startswith(NOTHING_OWED) else []
        return reasons[0] if len(reasons) == 1 and reasons[0] in END_REASONS else "nothing_owed"

    @property
    def opened_by(self) -> str | None:
        """What opened the case, for its open step recorded with it (`DunningCase.open`'s
        `cause`); None otherwise."""
        if self.kind != StepKind.OPEN or _SEP not in self.outcome:
            return None
        return self.outcome.partition(_SEP)[0]

    @property
    def by_operator(self) -> bool:
        """A pause, a resume, or an end an operator asked for (not one because nothing is owed)."""
        return self.kind in (StepKind.PAUSE, StepKind.RESUME) or (
            self.kind == StepKind.END and self.outcome.startswith(OPERATOR_END)
        )


_OWED = "owed "
_DUE = "invoices due "
_CREDIT = "credit "
_SEP = "; "


def reminder_outcome(owed: Money, due: Money | None = None, credit: Money | None = None) -> str:
    """The outcome a reminder is recorded with: the debt it reminds of (net of credit), what the
    invoices in debt still owe (gross) and the credit available (`Step.owed`, `Step.due`,
    `Step.credit` read them back; the `dunning.reminder_due` event carries them)."""
    parts = [(_OWED, owed), (_DUE, due), (_CREDIT, credit)]
    return _SEP.join(f"{label}{amount}" for label, amount in parts if amount is not None)


NOTHING_OWED = "nothing owed"
END_REASONS = ("paid", "credited", "voided", "written_off")
"""Why nothing is owed, as far as an end's facts tell (`end_outcome`, `Step.why`)."""


def end_outcome(reasons: Sequence[str]) -> str:
    """How an end because nothing is owed begins its outcome: `nothing owed (<reasons>)`
    (`END_REASONS`, in that order; none known: `nothing owed`); what it reactivated follows,
    after "; "."""
    known = [r for r in END_REASONS if r in reasons]
    return f"{NOTHING_OWED} ({', '.join(known)})" if known else NOTHING_OWED


OPERATOR_END = "ended by an operator"
"""The outcome of an operator's end begins so (`DunningCase.ended_by_operator`); an end because
nothing is owed is any other."""


def case_id(contact_id: str, currency: str, sequence: int) -> str:
    """Deterministic: the contact's `sequence`-th case in `currency` has one id, whoever opens it
    (its Step Functions execution is named after it, so a duplicate start is refused)."""
    return f"dun_{contact_id}_{currency}_{sequence}"


@dataclass(frozen=True, slots=True)
class DunningCase:
    id: str
    contact_id: str
    currency: str
    opened_on: date
    """The contact's day the case opened: its first failure, or its first overdue invoice."""
    policy: DunningPolicy
    """The policy it was opened under, kept (its threshold in the case's currency only)."""
    status: CaseStatus = CaseStatus.OPEN
    history: tuple[Step, ...] = ()
    version: int = 0
    """The stored item's version (0: not stored yet)."""

    @classmethod
    def open(
        cls,
        contact_id: str,
        currency: str,
        sequence: int,
        policy: DunningPolicy,
        on: date,
        *,
        cause: str | None = None,
        invoice_id: str | None = None,
    ) -> DunningCase:
        """Case `sequence` of the contact in `currency`, opened on `on` under `policy`; its open
        step records what opened it (`cause`: the event, e.g. `payment.failed`, and the invoice it
        named; `Step.opened_by` reads it back)."""
        version = f"policy version {policy.version}"
        outcome = version if cause is None else f"{cause}{_SEP}{version}"
        opened = Step(on, StepKind.OPEN, targets=() if invoice_id is None else (invoice_id,), outcome=outcome)
        return cls(
            case_id(contact_id, currency, sequence),
            contact_id,
            currency,
            on,
            policy.for_currency(currency),
            history=(opened,),
        )

    @property
    def ended(self) -> bool:
        return self.status is CaseStatus.ENDED

    @property
    def step(self) -> StepKind:
        """The last step taken."""
        return self.history[-1].kind if self.history else StepKind.OPEN

    def _targets(self, kind: StepKind) -> list[tuple[str, date]]:
        return [(target, s.on) for s in self.history if s.kind is kind for target in s.targets]

    @property
    def ever_deactivated(self) -> frozenset[str]:
        """Every service this case deactivated: it never deactivates one twice (one staff
        reactivated stays active)."""
        return frozenset(sid for sid, _ in self._targets(StepKind.DEACTIVATE))

    @property
    def deactivated(self) -> dict[str, date]:
        """The services this case deactivated and has not cancelled, with the day it did."""
        cancelled = self.cancelled
        days: dict[str, date] = {}
        for sid, on in self._targets(StepKind.DEACTIVATE):
            if sid not in cancelled:
                days.setdefault(sid, on)
        return days

    @property
    def acted_on(self) -> date:
        """The day of its last step on services or on its status (open, pause, resume, deactivate,
        cancel): a deactivation or cancellation falling due earlier is taken as of this day, never
        before (retries and reminders happen when they happen, and do not count)."""
        kinds = (StepKind.OPEN, StepKind.PAUSE, StepKind.RESUME, StepKind.DEACTIVATE, StepKind.CANCEL)
        return max((s.on for s in self.history if s.kind in kinds), default=self.opened_on)

    @property
    def cancelled(self) -> frozenset[str]:
        return frozenset(sid for sid, _ in self._targets(StepKind.CANCEL))

    @property
    def retried(self) -> frozenset[str]:
        """The attempt ids this case asked for."""
        return frozenset(aid for aid, _ in self._targets(StepKind.RETRY))

    @property
    def reminded(self) -> int:
        """The number of the last reminder sent (0: none)."""
        return max((int(n) for n, _ in self._targets(StepKind.REMIND)), default=0)

    def record(self, decision: Decision, on: date, outcome: str = "") -> DunningCase:
        """The case once `decision` was carried out on `on`, with everything it named, even what
        an action refused (`outcome` says so): the case never tries a step's target twice, so a
        refusal cannot loop; what it really stopped is read from the facts (`stopped_by`).
        Recording a step already recorded changes nothing, whatever its outcome says (a duplicate
        delivery, or two runs of one step: no step is ever legitimately taken twice on one day with
        the same targets, nor a retry of one attempt twice). A wait is not a step."""
        if isinstance(decision, Wait):
            return self
        step = Step(on, StepKind(decision.kind), _targets(decision), outcome)
        return self._with(step, CaseStatus.ENDED if isinstance(decision, End) else self.status)

    def paused(self, on: date, outcome: str = "") -> DunningCase:
        """Paused by an operator: no retry, reminder, deactivation or cancellation until resumed;
        it still ends when nothing is owed. Pausing a paused case changes nothing."""
        if self.status is CaseStatus.PAUSED:
            return self
        return self._with(Step(on, StepKind.PAUSE, outcome=outcome), CaseStatus.PAUSED, once=False)

    def resumed(self, on: date, outcome: str = "") -> DunningCase:
        """Resumed: what fell due while it was paused is decided at once (one retry, one reminder
        for the days missed, as after any days jumped over); a pause does not lengthen the grace
        period. Resuming a case not paused changes nothing; resuming an ended one is refused
        (`dunning.case_ended`), as pausing it is."""
        if self.ended:
            raise self._ended()
        if self.status is not CaseStatus.PAUSED:
            return self
        return self._with(Step(on, StepKind.RESUME, outcome=outcome), CaseStatus.OPEN, once=False)

    def ended_by_operator(self, on: date, reason: str = "") -> DunningCase:
        """Ended by an operator while something may still be owed: it stops chasing (no retry,
        reminder, deactivation or cancellation again) and reactivates nothing: what it deactivated
        stays so until staff reactivate it. The outcome says so. Ending an ended case (however it
        ended) changes nothing."""
        if self.ended:
            return self
        why = f": {reason}" if reason else ""
        outcome = f"{OPERATOR_END}{why}; nothing reactivated"
        return self._with(Step(on, StepKind.END, outcome=outcome), CaseStatus.ENDED, once=False)

    def _ended(self) -> Conflict:
        return Conflict(f"dunning case {self.id} has ended", code="dunning.case_ended")

    def _with(self, step: Step, status: CaseStatus, *, once: bool = True) -> DunningCase:
        """`once`: a step that can be taken only once (a pause and a resume may come and go on one day)."""
        if once and any(_same(step, taken) for taken in self.history):  # a duplicate delivery of a step recorded
            return self
        if self.ended:
            raise self._ended()
        return replace(self, history=(*self.history, step), status=status)


def _same(step: Step, taken: Step) -> bool:
    """`step` repeats `taken`: the same kind and targets on the same day, whatever its outcome says
    (two runs of one step may word it differently: one saw the charge fail, the other found it
    already failed); a retry of an attempt asked for already, on any day (its id is used once)."""
    if step.kind is not taken.kind or step.targets != taken.targets:
        return False
    return step.on == taken.on or step.kind is StepKind.RETRY


def _targets(decision: Decision) -> tuple[str, ...]:
    match decision:
        case End(reactivate=services) | Deactivate(services=services) | Cancel(services=services):
            return services
        case Retry(attempts=attempts):
            return tuple(attempt_id(invoice_id, number) for invoice_id, number in attempts)
        case Remind(number=number):
            return (str(number),)
    return ()


# -- the rule -----------------------------------------------------------------------------------------
def decide(case: DunningCase, facts: CaseFacts, today: date) -> Decision:
    """The case's next step on the contact's day `today` (docs/dunning.md, "Decision rules"), in
    this order: end when nothing is owed; retry the charges due; cancel, then deactivate, the
    services due; remind when due; else wait until the next day something falls due."""
    if facts.currency != case.currency:
        raise ValueError(f"facts in {facts.currency} for a case in {case.currency}")
    if case.ended:
        return End()
    policy = case.policy
    owed = facts.owed(today)
    if owed.is_zero:
        return End(tuple(sid for sid in sorted(case.deactivated) if _stopped(facts, sid, case.id)))
    if case.status is CaseStatus.PAUSED or facts.excluded:
        return Wait(None)
    in_debt = facts.in_debt(today)
    dates: list[date] = [i.due_date + timedelta(days=1) for i in facts.invoices if not i.in_debt(today)]

    retries = []
    for invoice in in_debt:
        due = _retry_due(invoice, policy, case.retried)
        if due is not None and due <= today:
            retries.append((invoice.invoice_id, invoice.latest_attempt.number + 1))  # type: ignore[union-attr]
        elif due is not None:
            dates.append(due)
    if retries:
        return Retry(tuple(sorted(retries)))

    threshold = policy.threshold(case.currency)
    over = threshold is not None and threshold < owed
    if over and facts.classification not in policy.excluded_from_deactivation:
        floor = case.acted_on
        cancel_after = policy.cancel_after_days
        cancels: dict[str, date] = {}
        if cancel_after is not None and facts.classification not in policy.excluded_from_cancellation:
            for sid, since in sorted(case.deactivated.items()):
                if not _stopped(facts, sid, case.id):
                    continue
                on = since + timedelta(days=cancel_after)
                if on <= today:
                    cancels[sid] = max(on, floor)
                else:
                    dates.append(on)
        grace_ends = case.opened_on + timedelta(days=policy.grace_days)
        debt_ids = {i.invoice_id for i in in_debt}
        ever = case.ever_deactivated
        deactivate: dict[str, date] = {}
        for service in facts.services:
            if service.state is not ServiceState.EFFECTIVE or service.service_id in ever:
                continue
            if not service.invoice_ids & debt_ids:
                continue
            on = max(grace_ends, service.grace_until or grace_ends)
            if on <= today:
                # as of the first day from then the debt was over the threshold (going day by day,
                # a debt under it at the grace's end deactivates only once an invoice takes it over)
                over_on = _over_from(facts, threshold, max(on, floor), today)
                if over_on is not None:
                    deactivate[service.service_id] = over_on
            else:
                dates.append(on)
        # What fell due first is taken first, as of its day (a cancellation before a deactivation
        # on the same day): a clock jumping over several days takes them as going day by day would.
        first = min((*cancels.values(), *deactivate.values()), default=None)
        if first is not None and first in cancels.values():
            return Cancel(_due_on(cancels, first), policy.cancel_with_fees, first)
        if first is not None:
            return Deactivate(_due_on(deactivate, first), first)

    slots = [n for n, d in enumerate(policy.reminder_days, 1) if case.opened_on + timedelta(days=d) <= today]
    if slots and slots[-1] > case.reminded:
        return Remind(slots[-1])
    later = [case.opened_on + timedelta(days=d) for d in policy.reminder_days[len(slots) :]]
    dates.extend(later[:1])
    return Wait(min((d for d in dates if d > today), default=None))


def _over_from(facts: CaseFacts, threshold: Money | None, start: date, today: date) -> date | None:
    """The first day from `start` to `today` the debt (as of that day: the invoices in debt then)
    was over the threshold. The debt moves only on a day an invoice's charge failed or it went
    overdue, so those days are the ones to look at."""
    if threshold is None:
        return None
    moves = {d for i in facts.invoices for d in (i.first_failed_on, i.due_date + timedelta(days=1)) if d is not None}
    days = sorted({start, today, *(d for d in moves if start < d <= today)})
    return next((d for d in days if threshold < facts.owed(d)), None)


def _due_on(due: Mapping[str, date], day: date) -> tuple[str, ...]:
    return tuple(sorted(sid for sid, on in due.items() if on == day))


def _stopped(facts: CaseFacts, service_id: str, case_id: str) -> bool:
    service = facts.service(service_id)
    return service is not None and service.stopped_by_case(case_id)


def _retry_due(invoice: InvoiceFacts, policy: DunningPolicy, retried: frozenset[str]) -> date | None:
    """The day the invoice's charge is due to be retried (maybe past), or None: not by dunning
    (never charged, a charge in flight or succeeded, the schedule used up, a hard decline with no
    new method), or a retry this case already asked for is not seen yet."""
    latest, first = invoice.latest_attempt, invoice.first_failed_on
    if latest is None or latest.status not in _FAILED or first is None:
        return None
    if attempt_id(invoice.invoice_id, latest.number + 1) in retried:
        return None
    if invoice.new_method:
        return latest.on
    if latest.hard_decline:
        return None
    slots = (first + timedelta(days=d) for d in policy.retry_days)
    return next((day for day in slots if day > latest.on), None)
