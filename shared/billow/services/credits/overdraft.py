"""Invoicing what a contact owes beyond its credits (docs/credits.md, "Overdraft").

A tenant that lets contacts overdraw (`credit_overdraft`) and prices an overdrawn credit
(`credit_overdraft_price`) has what a contact owes billed on the contact's next invoice in that
price's currency (its cycle's invoice: billing calls `with_overdraft` on each step that issues one).
Exactly once: before the step is written, the wallet books the overdraft's invoicing under the
invoice's own id (`crd_od_<invoice id>`: what is owed goes back to 0, the entry records how many
credits), and the invoice gets one line of those credits at the price. A rerun of the step (a crash,
a lost race) computes the same invoice id, finds the entry, and adds the same line: the credits are
never billed twice nor lost. Credits consumed after the entry is booked are owed anew, for the next
invoice. No rounding: a credit's price is exact in the currency, and the line is credits x price."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from fractions import Fraction

from billow.domain.billing import BillingStep
from billow.domain.credits import LINE_KIND, Change, EntryKind, Wallet, entry_id, settle_overdraft
from billow.domain.lines import LineDraft
from billow.domain.money import Money
from billow.services.context import SystemClock, TenantContext
from billow.services.credits.wallet import WalletPorts, change_wallet_now

CLOCK = SystemClock()


def with_overdraft(store: WalletPorts, ctx: TenantContext, step: BillingStep, invoice_id: str) -> BillingStep:
    """`step` with a line billing what its contact owes in credits, booked as invoiced by
    `invoice_id`; `step` unchanged when nothing is owed, no price is set, or its invoice is in
    another currency."""
    price, draft = ctx.settings.credit_overdraft_price, step.invoice
    if price is None or draft is None or draft.currency != price.currency:
        return step
    contact_id = draft.contact_id
    own = entry_id(EntryKind.OVERDRAFT_INVOICED, invoice_id)
    entry = store.get_credit_entry(ctx.scope, contact_id, own)
    if entry is None:
        if store.get_wallet(ctx.scope, contact_id).wallet.overdrawn:

            def operation(wallet: Wallet, now: datetime) -> Change:
                return settle_overdraft(wallet, now, invoice_id=invoice_id)

            entry = change_wallet_now(store, ctx, contact_id, CLOCK, own, operation).entry
        else:
            # Nothing owed (the common case: nothing written), or another biller of this very step
            # booked it between the two reads (the wallet and its entry are one transaction).
            entry = store.get_credit_entry(ctx.scope, contact_id, own)
    if entry is None or not entry.credits:
        return step
    line = LineDraft(
        LINE_KIND,
        f"{entry.credits:,} credits used beyond the balance",
        "",
        "",
        entry.credits,
        price,
        Fraction(1),
        Money(price.minor * entry.credits, price.currency),
        None,
    )
    return replace(step, invoice=replace(draft, lines=(*draft.lines, line)))
