"""One definition per value type: every face has every field of it.

A value type the core returns is defined once in Python (a dataclass of couponcore._types or
couponcore._wallet marked @record("CoreName")) and once in the binding (its record in
python/bindings/records.cpp, published as _core.fields("CoreName")). Everything else is derived:
the JSON both web faces write (couponcore._web.to_json), FastAPI's response models and OpenAPI
document. These tests fail when a field is missing from, or extra in, any face."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import couponcore
import pytest
import redis as redis_py
from conftest import production_kwargs
from couponcore import _core, _types, _wallet
from couponcore._types import ISSUE_RESULT_TYPES, core_field_names, from_core, records
from couponcore._web import json_fields, to_json

REPO = Path(__file__).resolve().parents[2]
PUBLIC_RECORDS = {
    couponcore.Campaign: "Campaign",
    couponcore.CampaignStats: "CampaignStats",
    couponcore.LogBacklog: "LogBacklog",
    couponcore.WriterInfo: "WriterInfo",
    couponcore.DeadLetter: "DeadLetter",
    couponcore.Coupon: "Coupon",
    couponcore.UseResult: "UseResult",
    couponcore.CouponPage: "CouponPage",
    couponcore.CouponCounts: "CouponCounts",
    couponcore.ExpireReport: "ExpireReport",
    couponcore.Partner: "Partner",
    couponcore.PartnerKey: "PartnerKey",
    couponcore.WalletResult: "WalletResult",
    couponcore.CheckoutResult: "WalletResult",
    couponcore.CheckoutCancelResult: "WalletResult",
    couponcore.Balance: "WalletBalance",
    couponcore.WalletEntry: "WalletEntry",
    couponcore.HistoryPage: "WalletHistoryPage",
}
# Core records the public API hands out as dicts (engine.reconcile(), counters, wallet jobs).
DICT_RECORDS = {
    "ReconcileReport",
    "AuthCounters",
    "WalletExpireReport",
    "WalletPurgeReport",
    "WalletAudit",
    "WalletCounters",
    "AnswerRecorderCounters",
}


def test_every_value_type_has_one_python_definition() -> None:
    assert records() == PUBLIC_RECORDS
    for cls in PUBLIC_RECORDS:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert cls.__module__ in (_types.__name__, _wallet.__name__)
        assert not hasattr(cls, "_from_core")  # no second, hand-written conversion
    # every record of the binding is read by a Python definition, or is one of the dict records
    # or the native IssueResult
    assert set(_core.records()) == set(PUBLIC_RECORDS.values()) | DICT_RECORDS | {"IssueResult"}


@pytest.mark.parametrize("core_name", sorted(set(PUBLIC_RECORDS.values())))
def test_python_definitions_read_every_core_field(core_name: str) -> None:
    """The C++ side's field list (the binding's record) against the Python definition(s): no
    field of the core is dropped, none is made up."""
    core_fields = set(_core.fields(core_name))
    used: set[str] = set()
    for cls, name in PUBLIC_RECORDS.items():
        if name != core_name:
            continue
        mine = core_field_names(cls)
        assert set(mine) <= core_fields, (cls.__name__, set(mine) - core_fields)
        used |= set(mine)
    assert used == core_fields, f"core fields of {core_name} no Python class reads: {core_fields - used}"
    if sum(name == core_name for name in PUBLIC_RECORDS.values()) == 1:
        (cls,) = [c for c, n in PUBLIC_RECORDS.items() if n == core_name]
        assert len(dataclasses.fields(cls)) == len(core_fields)


def test_issue_result_faces() -> None:
    """The native IssueResult: its record, its Python types, its properties, its stub."""
    names = _core.fields("IssueResult")
    assert list(ISSUE_RESULT_TYPES) == list(names)
    for n in names:
        assert isinstance(getattr(_core.IssueResult, n), property)
    stub = ast.parse((Path(_core.__file__).parent / "_core.pyi").read_text())
    (cls,) = [n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "IssueResult"]
    properties = [
        f.name
        for f in cls.body
        if isinstance(f, ast.FunctionDef) and any(getattr(d, "id", "") == "property" for d in f.decorator_list)
    ]
    assert properties == [*names, "issued"]


def test_stubs_name_every_core_method_returning_records() -> None:
    """The stub has no hand-written field lists left: methods return Record (a tuple in the
    record's order) or, for the dict records, dicts."""
    text = (Path(_core.__file__).parent / "_core.pyi").read_text()
    for field_name in ("discount_max", "created_at_us", "balance_after"):
        assert field_name not in text


def test_the_source_tree_stub_is_the_installed_one() -> None:
    installed = (Path(_core.__file__).parent / "_core.pyi").read_text()
    assert installed == (REPO / "python" / "couponcore" / "_core.pyi").read_text()


def _sample(cls: type) -> Any:
    """An instance of a value type with every field set (Optional fields too)."""
    t0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is typing.Union:
            tp = args[0]
        if typing.get_origin(tp) is list:
            values[f.name] = [_sample(typing.get_args(tp)[0])]
        elif typing.get_origin(tp) is dict:
            values[f.name] = {"k": "v"}
        elif dataclasses.is_dataclass(tp):
            values[f.name] = _sample(tp)  # type: ignore[arg-type]
        elif tp is dt.datetime:
            values[f.name] = t0
        elif isinstance(tp, type) and issubclass(tp, couponcore.CouponState):
            values[f.name] = couponcore.CouponState.USED
        elif tp is bool:
            values[f.name] = True
        elif tp is int:
            values[f.name] = 7
        else:
            values[f.name] = "x"
    return cls(**values)


@pytest.mark.parametrize("cls", list(PUBLIC_RECORDS), ids=lambda c: c.__name__)
def test_json_and_openapi_have_every_field(cls: type) -> None:
    """The JSON both web faces write, and FastAPI's response model and OpenAPI schema, have
    exactly the Python definition's fields (secrets excluded), with matching JSON types."""
    pytest.importorskip("fastapi")
    from couponcore.fastapi import response_model

    public = [f.name for f in dataclasses.fields(cls) if f.repr]
    assert [f.name for f in json_fields(cls)] == public
    sample = _sample(cls)
    as_json = to_json(sample)
    assert list(as_json) == public
    model = response_model(cls)
    assert list(model.model_fields) == public
    # what the documented model makes of the JSON is the JSON again
    assert _same_times(model.model_validate(as_json).model_dump(mode="json"), json.loads(json.dumps(as_json)))
    schema = model.model_json_schema()
    assert list(schema["properties"]) == public
    assert set(schema.get("required", [])) == set(public)


def _same_times(a: Any, b: Any) -> bool:
    """Equal, reading ISO times ("Z" or "+00:00") as times."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_times(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_times, a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return dt.datetime.fromisoformat(a.replace("Z", "+00:00")) == dt.datetime.fromisoformat(b)
        except ValueError:
            return False
    return bool(a == b)


def test_openapi_document_uses_the_derived_models(embedded: couponcore.Engine) -> None:
    pytest.importorskip("fastapi")
    from couponcore.fastapi import create_app, response_model

    schemas = create_app(embedded).openapi()["components"]["schemas"]
    for cls in PUBLIC_RECORDS:
        operator_values = (couponcore.ExpireReport, couponcore.LogBacklog, couponcore.WriterInfo, couponcore.DeadLetter)
        if cls in (couponcore.Partner, couponcore.PartnerKey, *operator_values):
            continue  # operator values: not served over HTTP
        name = response_model(cls).__name__
        assert name in schemas, name
        assert list(schemas[name]["properties"]) == [f.name for f in json_fields(cls)], name
    assert list(schemas["IssueOut"]["properties"]) == list(_core.fields("IssueResult"))


def test_real_values_through_every_face(db_path: str) -> None:
    """Values the engine really returns: built from the core in one step, their JSON (Django
    and FastAPI write to_json) and the FastAPI models agree field for field."""
    pytest.importorskip("fastapi")
    from couponcore.fastapi import response_model

    with couponcore.open(db_path) as e:
        c = e.campaigns.create("faces", 5, discount_kind="percent", discount_value=10, discount_max=500,
                               valid_days=3, starts_at=0)
        r = e.issue(c.id, "u1")
        assert to_json(r) == {"status": "ISSUED", "seq": 1, "coupon_id": r.coupon_id, "retry_after_ms": None}
        assert list(to_json(e.issue(c.id, "u1"))) == list(_core.fields("IssueResult"))
        used = e.coupons.use(r.coupon_id, "u1", "o1", 10_000)
        e.points.earn("u1", 50, idempotency_key="k1", expires_in_days=1)
        values = [
            c,
            e.campaigns.get(c.id),
            e.coupons.get(r.coupon_id),
            used,
            e.coupons.list_for_user("u1"),
            e.coupons.counts(c.id),
            e.stats(c.id) if e.drain(30) else None,
            e.expire_coupons(),
            pk := e.partners.create("p"),
            e.authenticate(pk.api_key),
            e.points.use("u1", 5, idempotency_key="k2"),
            e.points.balance("u1"),
            history := e.points.history("u1"),
            history.entries[0],
            e.checkout("u1", "o2", 1000, None, 5, idempotency_key="k3"),
            e.cancel_checkout("u1", "k3", idempotency_key="k4"),
        ]
        prod_where = production_kwargs()
        prod_prefix = prod_where["key_prefix"]
        with couponcore.open(**prod_where) as prod:  # only production has a grant log
            pc = prod.campaigns.create("faces", 5)
            prod.issue(pc.id, "u1")
            values += prod.log_backlog()
            values += prod.writers()
            # a malformed grant-log entry: the writer dead-letters it at once
            log_key = f"{prod_prefix}{{c{pc.id}}}:g"
            redis_py.Redis.from_url(prod_where["redis"]).xadd(log_key, {"c": str(pc.id), "s": "oops"})
            assert prod.drain(30)
            values += prod.dead_letters.list(pc.id)
        seen = set()
        for v in values:
            assert v is not None
            cls = type(v)
            seen.add(cls)
            assert cls in PUBLIC_RECORDS
            j = to_json(v)
            assert list(j) == [f.name for f in json_fields(cls)]
            response_model(cls).model_validate(j)  # what FastAPI checks each response against
        assert seen == set(PUBLIC_RECORDS)
        # the times are aware UTC datetimes, the enums enums
        assert c.created_at.tzinfo is dt.timezone.utc and c.starts_at == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        assert isinstance(e.coupons.get(r.coupon_id).state, couponcore.CouponState)
        assert isinstance(r.status, couponcore.Status)
        assert dataclasses.replace(c, name="n").name == "n" and hash(c) == hash(e.campaigns.get(c.id))


def test_django_json_has_every_field(tmp_path: Path) -> None:
    """Django's views write to_json of the same values; its POST /campaigns takes exactly the
    parameters of Campaigns.create."""
    pytest.importorskip("django")
    from couponcore.django import views

    assert list(views.CAMPAIGN_FIELDS) == [p for p in inspect.signature(couponcore.Campaigns.create).parameters][1:]
    assert set(views._TIME_FIELDS) == {"starts_at", "ends_at", "valid_until"}
    assert views.to_json is to_json


def test_fastapi_request_body_matches_create() -> None:
    """CampaignIn (the HTTP layer's limits) takes exactly the parameters of Campaigns.create."""
    pytest.importorskip("fastapi")
    from couponcore.fastapi import CampaignIn

    params = [p for p in inspect.signature(couponcore.Campaigns.create).parameters if p != "self"]
    assert list(CampaignIn.model_fields) == params


def test_from_core_reports_a_field_the_core_lacks() -> None:
    @_types.record("Partner")
    @dataclasses.dataclass(frozen=True)
    class Broken:
        id: int
        nickname: str

    try:
        with pytest.raises(TypeError, match="nickname"):
            from_core(Broken, (1, "n", 0, 0))
    finally:
        _types._RECORDS.pop(Broken)
