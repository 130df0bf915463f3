"""Input that used to get a 5xx or a wrong answer (issue 10, points 7 to 10), through the real API
handler on moto: a 4xx in the one error shape with a dotted code, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api.bodies import MAX_DEPTH, nesting_depth_exceeds
from billow.local.stack import add_tenant
from billow.storage.models import BillowItem

from tests.support import InProcessClient, make_contact, make_product

KEY = "bk_test_input_tenant"


@pytest.fixture
def api(moto_table: str) -> Iterator[InProcessClient]:
    add_tenant("input-tenant", "Input Tenant", KEY)
    yield InProcessClient(KEY)


def item_count() -> int:
    return sum(1 for _ in BillowItem.scan())


def refused(reply: object, status: int, code: str, field: str | None = None) -> None:
    body = reply.body
    assert reply.status == status, body
    assert set(body) >= {"error", "message", "fields"} and body["error"] == code, body
    if field is not None:
        named = [f["field"] for f in body["fields"]]
        assert any(n == field or n.startswith((f"{field}.", f"{field}[")) for n in named), body


# -- point 7: bodies nested too deep, bodies that are not JSON ----------------------------------------
def nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b"}"


def test_a_body_of_a_thousand_nested_arrays_is_a_400_not_a_crash(api: InProcessClient) -> None:
    before = item_count()
    refused(api.post("/products", raw=b"[" * 1000 + b"]" * 1000), 400, "request.too_deep", "body")
    refused(api.post("/contacts", raw=nested(100_000)), 400, "request.too_deep", "body")
    assert item_count() == before


def test_the_depth_limit_counts_brackets_not_strings() -> None:
    assert not nesting_depth_exceeds("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert nesting_depth_exceeds("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert nesting_depth_exceeds('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1))
    assert not nesting_depth_exceeds('{"name": "' + "[" * 5000 + '\\"[["}')


def test_a_body_within_the_limit_is_validated_as_usual(api: InProcessClient) -> None:
    reply = api.post("/contacts", raw=nested(MAX_DEPTH - 1))
    refused(reply, 422, reply.body["error"], "name")
    assert reply.body["error"] != "request.too_deep"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000,  # unbalanced and deep
        b'{"name": NaN, "email": "a@example.com"}',  # NaN is not JSON
        b'{"name": "Ann", "email": "a@example.com", "classification": ' + b"1" * 5000 + b"}",  # too long an int
    ],
)
def test_what_is_not_json_is_a_400_malformed_body(api: InProcessClient, raw: bytes) -> None:
    before = item_count()
    reply = api.post("/contacts", raw=raw)
    assert reply.status == 400 and set(reply.body) >= {"error", "message", "fields"}, reply.body
    assert item_count() == before


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
    ],
)
def test_a_body_that_is_not_json_is_a_415(api: InProcessClient, content_type: str) -> None:
    before = item_count()
    form = b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\r\n--xyz--\r\n'
    reply = api.post("/products", raw=form, headers={"Content-Type": content_type})
    refused(reply, 415, "request.unsupported_media_type", "Content-Type")
    assert item_count() == before


def test_json_with_a_charset_is_json(api: InProcessClient) -> None:
    reply = api.post(
        "/contacts",
        raw=b'{"name": "Ann", "email": "a@example.com"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert reply.status == 201, reply.body


@pytest.mark.parametrize(
    "content_type", ["APPLICATION/JSON", "Application/Json; Charset=UTF-8", 'application/json;charset="utf-8"']
)
def test_a_json_media_type_is_json_in_any_case(api: InProcessClient, content_type: str) -> None:
    reply = api.post(
        "/contacts", raw=b'{"name": "Ann", "email": "a@example.com"}', headers={"Content-Type": content_type}
    )
    assert reply.status == 201, reply.body


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=latin-1", "application/json; charset=utf-16", None]
)
def test_json_in_another_charset_or_a_body_without_a_type_is_a_415(
    api: InProcessClient, content_type: str | None
) -> None:
    body = b'{"name": "Ann", "email": "a@example.com"}'  # what the charset names is refused, whatever it holds
    headers = {"Authorization": f"Bearer {KEY}"} | ({"Content-Type": content_type} if content_type else {})
    reply = api.send("POST", "/contacts", headers, body)
    refused(reply, 415, "request.unsupported_media_type", "Content-Type")
    assert api.get("/contacts").body["items"] == []


def test_a_route_that_takes_no_body_refuses_a_body_that_is_not_json_and_ignores_json(api: InProcessClient) -> None:
    product = make_product(api)
    archive = f"/products/{product['id']}/archive"
    refused(
        api.post(archive, raw=b"now", headers={"Content-Type": "text/plain"}), 415, "request.unsupported_media_type"
    )
    refused(
        api.send("POST", archive, {"Authorization": f"Bearer {KEY}"}, b"now"), 415, "request.unsupported_media_type"
    )
    assert api.get(f"/products/{product['id']}").body["archived"] is False
    assert api.post(archive, raw=b"{}").body["archived"] is True


# -- point 8: amounts parsed exactly from their string, against their currency's decimals -------------
def terms(price: str = "10.00", currency: str = "USD", **more: str) -> dict[str, object]:
    return {"price": price, "currency": currency, "cycle": "month", "billing_model": "advance", **more}


def product_with(client: InProcessClient, **fields: object) -> object:
    return client.post("/products", {"name": "Pro", "terms": [fields]})


def order_invoice(api: InProcessClient, price: str) -> dict[str, object]:
    product = make_product(api, terms(price))
    contact = make_contact(api)
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    placed = api.post("/orders", {"contact_id": contact["id"], "items": [item]})
    assert placed.status == 201, placed.body
    return dict(placed.body["invoices"][0])


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("28.99999999999999999999999999999", "USD"),  # was stored as 29.00
        ("10.001", "USD"),
        ("10.000", "USD"),  # a decimal more than USD has, even a zero
        ("1000.5", "JPY"),
        ("1000.0", "JPY"),
        ("1.2345", "KWD"),
    ],
)
def test_more_decimals_than_the_currency_has_is_a_422_never_rounded(
    api: InProcessClient, amount: str, currency: str
) -> None:
    before = item_count()
    refused(product_with(api, **terms(amount, currency)), 422, "money.too_many_decimals", "terms[0].price")
    assert item_count() == before


@pytest.mark.parametrize(
    ("amount", "currency", "shown"), [("1000", "JPY", "1000"), ("1.234", "KWD", "1.234"), ("0.5", "USD", "0.50")]
)
def test_as_many_decimals_as_the_currency_has_are_taken_exactly(
    api: InProcessClient, amount: str, currency: str, shown: str
) -> None:
    reply = product_with(api, **terms(amount, currency))
    assert reply.status == 201, reply.body
    assert reply.body["terms"][0]["price"] == {"amount": shown, "currency": currency}


NOT_DECIMAL_STRINGS: list[object] = [
    "1e-999999999",  # was stored as 0.00
    "1E2",
    "1_000",  # was accepted as 1000
    " 5",
    "5 ",
    "+5",
    "-5",
    "5.",
    ".5",
    "0x10",
    "Infinity",
    "NaN",
    "١٢",  # Arabic-Indic digits are digits to Python's Decimal
    "",
    "1" * 16,
    5,
    19.99,
    True,
]


@pytest.mark.parametrize("amount", NOT_DECIMAL_STRINGS)
def test_only_a_plain_decimal_string_is_an_amount(api: InProcessClient, amount: object) -> None:
    before = item_count()
    reply = api.post("/products", {"name": "Pro", "terms": [terms(amount)]})  # type: ignore[arg-type]
    refused(reply, 422, reply.body.get("error", ""), "terms[0].price")
    assert item_count() == before


def test_every_money_input_is_checked_against_its_currency(api: InProcessClient) -> None:
    before = item_count()
    for field in ("setup_fee", "cancellation_fee"):
        extra = {field: "1.001", "contract_cycles": 12} if field == "cancellation_fee" else {field: "1.001"}
        refused(product_with(api, **terms(**extra)), 422, "money.too_many_decimals", f"terms[0].{field}")
        refused(product_with(api, **terms(**{field: "1e2"})), 422, "money.not_a_decimal", f"terms[0].{field}")
    contact = {"name": "Ann", "email": "a@example.com"}
    limit = {"JPY": "100.5"}
    created = api.post("/contacts", {**contact, "credit_limit": limit})
    refused(created, 422, "money.too_many_decimals", "credit_limit.JPY")
    limit = {"JPY": "1_000"}
    refused(api.post("/contacts", {**contact, "credit_limit": limit}), 422, "money.not_a_decimal", "credit_limit.JPY")
    assert item_count() == before
    preview = {"terms": terms("9.999"), "start": "2025-01-01", "as_of": "2025-01-01"}
    refused(api.post("/billing/preview", preview), 422, "money.too_many_decimals", "terms.price")
    preview = {"terms": terms("10.00", setup_fee="1e1"), "start": "2025-01-01", "as_of": "2025-01-01"}
    refused(api.post("/billing/preview", preview), 422, "money.not_a_decimal", "terms.setup_fee")


def test_a_payment_a_hair_under_the_invoice_does_not_pay_it(api: InProcessClient) -> None:
    invoice = order_invoice(api, "7.00")
    pay = f"/invoices/{invoice['id']}/payments"
    payment = {"currency": "USD", "reference": "t-1", "received_on": "2025-01-01"}
    for amount, code in [
        ("6.999999999999999999999999999999", "money.too_many_decimals"),
        ("7e0", "money.not_a_decimal"),
    ]:
        refused(api.post(pay, {**payment, "amount": amount}), 422, code, "amount")
    shown = api.get(f"/invoices/{invoice['id']}").body
    assert shown["status"] == "open" and shown["payments"] == []


def test_the_openapi_document_types_amounts_as_decimal_strings() -> None:
    from billow.domain.money import AMOUNT_PATTERN
    from billow.local.lambda_runtime import handler

    document = handler("api.handler.complete_app")().get_openapi_schema(title="Billow API", version="0.1.0")
    schemas = document.model_dump(by_alias=True, exclude_none=True)["components"]["schemas"]
    price = schemas["PriceTermsBody"]["properties"]["price"]
    assert (price["type"], price["pattern"]) == ("string", AMOUNT_PATTERN)
    assert schemas["ManualPaymentBody"]["properties"]["amount"]["pattern"] == AMOUNT_PATTERN


# -- point 9: a payment's received_on, between the invoice's issue (less a window) and the contact's today
def test_a_payment_is_received_neither_after_the_contacts_today_nor_absurdly_early(api: InProcessClient) -> None:
    product = make_product(api, terms("100.00"))
    contact = make_contact(api)
    api.post(f"/contacts/{contact['id']}/test-clock", {"frozen_time": "2025-01-01T10:00:00Z"})
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    (invoice,) = api.post("/orders", {"contact_id": contact["id"], "items": [item]}).body["invoices"]
    assert invoice["issue_date"] == "2025-01-01"
    pay = f"/invoices/{invoice['id']}/payments"
    payment = {"amount": "10.00", "currency": "USD", "reference": "r"}

    for day in ("9999-12-31", "2025-01-02"):  # after the test clock's today, though before real time's
        reply = api.post(pay, {**payment, "received_on": day})
        refused(reply, 422, "payment.received_in_future", "received_on")
        assert "2025-01-01" in reply.body["message"]
    for day in ("0001-01-01", "2024-10-02"):  # the earliest is 90 days before the invoice was issued
        reply = api.post(pay, {**payment, "received_on": day})
        refused(reply, 422, "payment.received_too_early", "received_on")
        assert "90 days before" in reply.body["message"] and "2024-10-03" in reply.body["message"]
    assert api.get(f"/invoices/{invoice['id']}").body["payments"] == []

    assert api.post(pay, {**payment, "reference": "early", "received_on": "2024-10-03"}).status == 201
    assert api.post(pay, {**payment, "reference": "today", "received_on": "2025-01-01"}).status == 201
    api.post(f"/contacts/{contact['id']}/test-clock/advance", {"to": "2025-01-05T10:00:00Z"})
    assert api.post(pay, {**payment, "reference": "later", "received_on": "2025-01-05"}).status == 201
    assert len(api.get(f"/invoices/{invoice['id']}").body["payments"]) == 3


# -- point 10: control characters, debt thresholds with currencies, rules that make no sense ----------
def contact_body(**fields: object) -> dict[str, object]:
    return {"name": "Ann", "email": "ann@example.com", **fields}


ADDRESS = {"line1": "1 Main St", "city": "Springfield", "country": "US"}


@pytest.mark.parametrize(
    "character",
    # control characters, a lone surrogate, and the invisible ones: line and paragraph separators,
    # a right-to-left override, a zero-width space, a byte-order mark
    ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\n", "\ud800", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff"],
)
def test_control_characters_in_text_are_refused_naming_the_field(api: InProcessClient, character: str) -> None:
    before = item_count()
    cases: list[tuple[str, dict[str, object], str]] = [
        ("/contacts", contact_body(name=f"Ann{character}Example"), "name"),
        ("/contacts", contact_body(email=f"ann{character}@example.com"), "email"),
        (
            "/contacts",
            contact_body(billing_address={**ADDRESS, "line1": f"1 Main{character}St"}),
            "billing_address.line1",
        ),
        ("/contacts", contact_body(classification=f"v{character}ip"), "classification"),
        ("/products", {"name": f"Pro{character}Plan", "terms": [terms()]}, "name"),
        (
            "/products",
            {"name": "Pro", "description": f"a{character}b" if character != "\n" else "a\x00b"},
            "description",
        ),
    ]
    for path, body, field in cases:
        reply = api.post(path, body)
        # A character some other rule of the field refuses first (an email's pattern, a lone
        # surrogate that is no string at all) is refused under the generic code.
        code = reply.body["error"]
        generic_first = field == "email" or character == "\ud800"
        assert code == "text.control_character" or (code == "request.validation_failed" and generic_first)
        refused(reply, 422, code, field)
    reasons = {"reasons": {"cancel": [f"moved{character}away"]}}
    reply = api.patch("/settings/subscriptions", reasons)
    refused(reply, 422, reply.body["error"], "reasons")
    assert reply.body["error"] in ("text.control_character", "request.validation_failed")
    assert item_count() == before


def test_a_payment_reference_or_an_order_reference_carries_no_control_character(api: InProcessClient) -> None:
    invoice = order_invoice(api, "7.00")
    payment = {"amount": "7.00", "currency": "USD", "reference": "TRF\x001", "received_on": invoice["issue_date"]}
    refused(api.post(f"/invoices/{invoice['id']}/payments", payment), 422, "text.control_character", "reference")
    product = make_product(api, terms())
    item = {"product_id": product["id"], "terms_id": product["terms"][0]["id"]}
    order = {"contact_id": invoice["contact_id"], "items": [item], "reference": "po\x00"}
    refused(api.post("/orders", order), 422, "text.control_character", "reference")


@pytest.mark.parametrize("character", ["\u2028", "\u202e", "\x7f"])
def test_a_void_reason_carries_no_control_or_invisible_character(api: InProcessClient, character: str) -> None:
    invoice = order_invoice(api, "7.00")
    void = f"/invoices/{invoice['id']}/void"
    refused(api.post(void, {"reason": f"sent{character}twice"}), 422, "text.control_character", "reason")
    assert api.get(f"/invoices/{invoice['id']}").body["status"] == "open"
    assert api.post(void, {"reason": "sent  twice\u00a0— doppelt"}).status == 200  # spaces and any script stay


def test_text_of_any_script_with_its_joiners_and_spaces_is_kept(api: InProcessClient) -> None:
    name = "Zoë Ñandú 東京 \u0645\u06cc\u200c\u062e\u0648\u0627\u0645 \U0001f469\u200d\U0001f4bb\u3000Ltd"
    reply = api.post("/contacts", contact_body(name=name))
    assert reply.status == 201 and reply.body["name"] == name, reply.body


@pytest.mark.parametrize("key", ["k\x7fey", "two words", "clé", "tab\tkey", "x" * 256])
def test_an_idempotency_key_is_printable_ascii(api: InProcessClient, key: str) -> None:
    before = item_count()
    reply = api.post("/contacts", contact_body(), headers={"Idempotency-Key": key})
    refused(reply, 422, "idempotency.key_invalid", "Idempotency-Key")
    assert item_count() == before
    fine = "550e8400-e29b-41d4-a716-446655440000:~!" + "x" * 216  # 255 printable characters
    assert api.post("/contacts", contact_body(), headers={"Idempotency-Key": fine}).status == 201


def test_a_product_description_may_span_lines(api: InProcessClient) -> None:
    reply = api.post("/products", {"name": "Pro", "description": "Line one\nLine two\twith a tab", "terms": [terms()]})
    assert reply.status == 201, reply.body
    assert reply.body["description"] == "Line one\nLine two\twith a tab"


def test_a_debt_threshold_is_money_in_a_currency(api: InProcessClient) -> None:
    settings = "/settings/subscriptions"
    refused(api.patch(settings, {"debt_threshold": "100.00"}), 422, "request.validation_failed", "debt_threshold")
    refused(api.patch(settings, {"debt_threshold": {"USD": "1e2"}}), 422, "money.not_a_decimal", "debt_threshold.USD")
    for currency, amount in [("USD", "100.001"), ("JPY", "10000.5"), ("KWD", "1.0001")]:
        reply = api.patch(settings, {"debt_threshold": {currency: amount}})
        refused(reply, 422, "money.too_many_decimals", f"debt_threshold.{currency}")
    refused(api.patch(settings, {"debt_threshold": {"XYZ": "1"}}), 422, "money.unknown_currency", "debt_threshold.XYZ")

    thresholds = {"USD": "100.00", "JPY": "10000", "KWD": "1.500"}
    assert api.patch(settings, {"debt_threshold": thresholds}).status == 200
    assert api.get("/settings").body["subscriptions"]["debt_threshold"] == thresholds


def test_activation_compares_the_debt_in_each_currency_with_that_currencys_threshold(api: InProcessClient) -> None:
    invoice = order_invoice(api, "31.00")  # the contact owes 31.00 USD
    subscription = api.get(f"/subscriptions/{invoice['subscription_id']}").body
    service = f"/subscriptions/{subscription['id']}/services/{subscription['services'][0]['id']}"
    assert api.post(f"{service}/deactivate", {}).status == 201

    api.patch("/settings/subscriptions", {"debt_threshold": {"JPY": "100000"}})  # none for USD: no USD debt
    refused_ = api.post(f"{service}/activate", {})
    assert refused_.status == 409 and refused_.body["error"] == "activation.debt_threshold"
    assert "31.00 USD" in refused_.body["message"] and "no debt_threshold for USD" in refused_.body["message"]
    api.patch("/settings/subscriptions", {"debt_threshold": {"USD": "30.99"}})
    assert api.post(f"{service}/activate", {}).body["error"] == "activation.debt_threshold"
    api.patch("/settings/subscriptions", {"debt_threshold": {"USD": "31.00"}})
    assert api.post(f"{service}/activate", {}).status == 201


@pytest.mark.parametrize(
    ("requires", "circle"),
    [
        ({"a": ["a"]}, "a requires a"),
        ({"a": ["b"], "b": ["a"]}, "a requires b requires a"),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "a requires b requires c requires a"),
        ({"a": ["x"], "b": ["c"], "c": ["d"], "d": ["b"]}, "b requires c requires d requires b"),
    ],
)
def test_products_cannot_require_each_other_in_a_circle(
    api: InProcessClient, requires: dict[str, list[str]], circle: str
) -> None:
    names = {p for product, needs in requires.items() for p in (product, *needs)}
    ids = {name: make_product(api, terms(), name=name)["id"] for name in sorted(names)}
    by_id = {ids[product]: [ids[n] for n in needs] for product, needs in requires.items()}
    reply = api.patch("/settings/subscriptions", {"requires": by_id})
    refused(reply, 422, "policy.circular_requires")
    named = reply.body["message"].split("(", 1)[1].split(")", 1)[0].split(" requires ")  # where it starts may vary
    expected = [ids[name] for name in circle.split(" requires ")]
    assert named[0] == named[-1] and sorted(named[1:]) == sorted(expected[1:]), reply.body
    assert reply.body["fields"][0]["field"] == f"requires.{named[0]}"
    assert api.get("/settings").body["subscriptions"]["requires"] == {}


def test_a_chain_of_requirements_without_a_circle_is_kept(api: InProcessClient) -> None:
    a, b, c = (make_product(api, terms(), name=n)["id"] for n in "abc")
    requires = {a: [b, c], b: [c]}
    assert api.patch("/settings/subscriptions", {"requires": requires}).status == 200
    assert api.get("/settings").body["subscriptions"]["requires"] == requires


def test_no_billable_states_and_an_empty_reason_list_are_refused(api: InProcessClient) -> None:
    refused(
        api.patch("/settings/billing", {"billable_states": []}), 422, "request.validation_failed", "billable_states"
    )
    reply = api.patch("/settings/subscriptions", {"reasons": {"cancel": []}})
    refused(reply, 422, "request.validation_failed", "reasons.cancel")
    settings = api.get("/settings").body
    assert settings["billing"]["billable_states"] == ["effective"]
    assert settings["subscriptions"]["reasons"] == {}


def test_the_rules_themselves_refuse_no_billable_states_and_empty_reason_lists() -> None:
    from billow.domain.errors import InvalidInput
    from billow.domain.policy import SubscriptionPolicy
    from billow.domain.rules import BillingRules

    with pytest.raises(InvalidInput) as caught:
        BillingRules(billable_states=frozenset())
    assert (caught.value.code, caught.value.field) == ("billing.no_billable_states", "billable_states")
    with pytest.raises(InvalidInput) as caught:
        SubscriptionPolicy.from_json({"reasons": {"cancel": []}})
    assert (caught.value.code, caught.value.field) == ("policy.no_reasons", "reasons.cancel")
    assert SubscriptionPolicy.from_json({"reasons": {"cancel": ["moved"]}}).reasons == {"cancel": ("moved",)}


# -- strict JSON types: a mistyped field is refused, never converted ----------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/settings/billing", {"bill_days_before": False}, "bill_days_before"),
        ("/settings/billing", {"period_day": 5.0}, "period_day"),
        ("/settings/subscriptions", {"grace_max_days": "30"}, "grace_max_days"),
        ("/settings/subscriptions", {"grace_max_days": 30.0}, "grace_max_days"),
        ("/settings/subscriptions", {"trial_extension": "true"}, "trial_extension"),
        ("/settings/subscriptions", {"max_services": {"gold": "3"}}, "max_services"),
        ("/settings/profile", {"payment_terms_days": "14"}, "payment_terms_days"),
        ("/settings/profile", {"name": 7}, "name"),
    ],
)
def test_a_setting_of_the_wrong_json_type_is_refused_and_not_changed(
    api: InProcessClient, path: str, body: dict[str, object], field: str
) -> None:
    before = api.get("/settings").body
    refused(api.patch(path, body), 422, "request.validation_failed", field)
    assert api.get("/settings").body == before


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"auto_renew": "yes"}, "auto_renew"),
        ({"auto_renew": 0}, "auto_renew"),
        ({"trial_days": "3"}, "trial_days"),
        ({"trial_days": 3.0}, "trial_days"),
        ({"term_cycles": True}, "term_cycles"),
        ({"cycle": 1}, "cycle"),
    ],
)
def test_terms_of_the_wrong_json_type_are_refused(api: InProcessClient, given: dict[str, object], field: str) -> None:
    before = item_count()
    refused(product_with(api, **{**terms(), **given}), 422, "request.validation_failed", f"terms[0].{field}")
    assert item_count() == before


def test_days_instants_and_choices_are_read_from_their_json_strings_only(api: InProcessClient) -> None:
    good = make_product(api, {**terms(), "term_cycles": 12, "auto_renew": False, "trial_days": 3, "cycle": "year"})
    assert (good["terms"][0]["cycle"], good["terms"][0]["auto_renew"], good["terms"][0]["trial_days"]) == (
        "year",
        False,
        3,
    )
    contact = make_contact(api)
    item = {"product_id": good["id"], "terms_id": good["terms"][0]["id"]}
    order = {"contact_id": contact["id"], "items": [item]}
    refused(api.post("/orders", {**order, "start_date": 0}), 422, "request.validation_failed", "start_date")
    refused(api.post("/orders", {**order, "items": [{**item, "quantity": "2"}]}), 422, "request.validation_failed")
    clock = f"/contacts/{contact['id']}/test-clock"
    refused(api.post(clock, {"frozen_time": 1767225600}), 422, "request.validation_failed", "frozen_time")
    assert api.post(clock, {"frozen_time": "2026-01-01T00:00:00Z"}).status == 201
    placed = api.post("/orders", {**order, "start_date": "2026-01-01"})
    assert placed.status == 201, placed.body


@pytest.mark.parametrize("limit", ["%205", "5%20", "5.0", "%2B5", "5_0", "%D9%A5", "0", "101"])
def test_a_page_size_is_plain_digits_from_1_to_100(api: InProcessClient, limit: str) -> None:
    refused(api.get(f"/products?limit={limit}"), 422, "request.validation_failed", "limit")


def test_a_page_size_in_digits_is_taken(api: InProcessClient) -> None:
    make_product(api, terms())
    make_product(api, terms())
    assert len(api.get("/products?limit=1").body["items"]) == 1
    assert len(api.get("/products?limit=100").body["items"]) == 2


# -- names show something -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["\u200b", "\ufeff", "\u202e", "\u2028", "\u200b \u2060\u3000", "\u00a0\u2029"])
def test_a_name_of_only_invisible_characters_is_refused(api: InProcessClient, name: str) -> None:
    before = item_count()
    refused(api.post("/contacts", {"name": name, "email": "a@example.com"}), 422, "request.validation_failed", "name")
    refused(api.post("/products", {"name": name}), 422, "request.validation_failed", "name")
    refused(api.patch("/settings/profile", {"name": name}), 422, "request.validation_failed", "name")
    assert item_count() == before


def test_a_name_with_invisible_characters_among_visible_ones_is_refused_but_joiners_are_kept(
    api: InProcessClient,
) -> None:
    hidden = api.post("/contacts", {"name": "\u200bAnn", "email": "a@example.com"})
    refused(hidden, 422, "text.control_character", "name")
    reply = api.post("/contacts", {"name": "Ann\u200dBob", "email": "a@example.com"})
    assert reply.status == 201 and reply.body["name"] == "Ann\u200dBob", reply.body
