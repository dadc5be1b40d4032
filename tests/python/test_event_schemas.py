"""The shipped JSON Schemas of the events, and versioned decoding (couponcore.events.decode).

The validator couponcore uses is its own (a subset of JSON Schema, no dependency); here the
``jsonschema`` package checks that each schema is valid 2020-12 and that both agree on valid and
broken events.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

import couponcore
import jsonschema
import pytest
from couponcore import events
from couponcore.events import _validator, example_event

ALL = [(t, v) for t in events.EVENT_TYPES for v in events.versions(t)]


def test_every_type_ships_v1_and_coupon_issued_v2() -> None:
    assert set(events.EVENT_TYPES) == {
        "coupon.issued",
        "coupon.used",
        "coupon.use_cancelled",
        "coupon.expired",
        "campaign.sold_out",
        "points.earned",
        "points.used",
        "points.cancelled",
        "points.expired",
        "points.transferred",
    }
    for t in events.EVENT_TYPES:
        assert events.versions(t)[0] == 1, t
    assert events.versions("coupon.issued") == (1, 2)
    assert set(events.DATA_CLASSES) == set(ALL)


@pytest.mark.parametrize("event_type,version", [*ALL, ("cloudevent", 1)])
def test_schema_is_2020_12_within_the_checked_subset(event_type: str, version: int) -> None:
    schema = events.load_schema(event_type, version)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == events.dataschema_urn(event_type, version)

    def walk(s: dict[str, Any]) -> None:
        unknown = set(s) - _validator.CHECKED_KEYWORDS - _validator.ANNOTATIONS
        assert not unknown, f"{event_type} v{version} uses {unknown}: extend couponcore's validator first"
        for sub in s.get("properties", {}).values():
            walk(sub)

    walk(schema)
    for ex in schema["examples"]:
        jsonschema.Draft202012Validator(schema).validate(ex)
        assert _validator.errors(ex, schema) == []


@pytest.mark.parametrize("event_type,version", ALL)
def test_dataclass_fields_are_the_schema_properties(event_type: str, version: int) -> None:
    schema = events.load_schema(event_type, version)
    cls = events.DATA_CLASSES[(event_type, version)]
    assert [f.name for f in fields(cls)] == list(schema["properties"]) == schema["required"]


def _broken_copies(schema: dict[str, Any], example: dict[str, Any]) -> list[dict[str, Any]]:
    """For each property: missing, of a wrong type, and (where the schema bounds it) out of range."""
    out = []
    for name, prop in schema["properties"].items():
        if name in schema["required"]:
            out.append({k: v for k, v in example.items() if k != name})
        if "const" in prop:
            out.append({**example, name: "something else"})
            continue
        kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        out.append({**example, name: [] if "string" in kinds else "x"})
        if "minimum" in prop:
            out.append({**example, name: prop["minimum"] - 1})
        if "minLength" in prop:
            out.append({**example, name: ""})
        if "pattern" in prop:
            out.append({**example, name: "not a time"})
    return out


@pytest.mark.parametrize("event_type,version", [*ALL, ("cloudevent", 1)])
def test_couponcore_and_jsonschema_agree_on_broken_copies(event_type: str, version: int) -> None:
    schema = events.load_schema(event_type, version)
    strict = jsonschema.Draft202012Validator(schema)
    broken = _broken_copies(schema, schema["examples"][0])
    assert len(broken) >= 2 * len(schema["required"])
    for b in broken:
        assert not strict.is_valid(b), b
        assert _validator.errors(b, schema), b
    # a property couponcore does not know yet is allowed within a version (additive change)
    extended = {**schema["examples"][0], "added_later": 1}
    assert strict.is_valid(extended) and _validator.errors(extended, schema) == []


def test_decode_each_type_from_its_example() -> None:
    for t in events.EVENT_TYPES:
        ev = events.decode(example_event(t))
        assert ev.type == t and ev.version == ev.written_version == 1
        assert isinstance(ev.data, events.DATA_CLASSES[(t, 1)])
        assert ev.partner_id == 1 and ev.sequence == 42 and ev.source == "couponcore/partner/1"
        assert ev.time == datetime(2026, 12, 6, 9, 20, 0, 123456, tzinfo=timezone.utc)
        assert ev.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_decode_takes_json_text_and_bytes_and_ignores_unknown_fields() -> None:
    raw = example_event("points.used", added_later="x")
    raw["newattribute"] = "y"
    for form in (raw, json.dumps(raw), json.dumps(raw).encode()):
        ev = events.decode(form)
        assert ev.data == events.PointsUsedV1(
            entry_id=502,
            user_id="user-42",
            amount=500,
            balance_after=1200,
            idempotency_key="use-order-8",
            order_id="order-8",
            reason=None,
            ref_entry_id=None,
            to_user_id=None,
        )


def test_v2_consumer_reads_v1_events() -> None:
    """coupon.issued v1 carries microseconds; v2 RFC 3339 strings. A v2 consumer gets v1 events upcast."""
    v1 = example_event("coupon.issued")
    as_written = events.decode(v1)
    assert isinstance(as_written.data, events.CouponIssuedV1)
    ev = events.decode(v1, version=2)
    assert ev.written_version == 1 and ev.version == 2
    assert isinstance(ev.data, events.CouponIssuedV2)
    assert ev.data.issued_at == "2026-12-06T09:20:00.123456Z"
    assert ev.data.issued_at_dt == datetime(2026, 12, 6, 9, 20, 0, 123456, tzinfo=timezone.utc)
    assert ev.data.valid_until == "2027-01-05T09:20:00.000000Z"
    assert ev.data.issued_at_dt.timestamp() * 1_000_000 == pytest.approx(as_written.data.issued_at_us, abs=1)
    for same in ("campaign_id", "coupon_id", "seq", "user_id", "user_ordinal", "request_id"):
        assert getattr(ev.data, same) == getattr(as_written.data, same)
    no_end = events.decode(example_event("coupon.issued", valid_until_us=None), version=2)
    assert no_end.data.valid_until is None and no_end.data.valid_until_dt is None
    # a v2 event reads as v2, and cannot be read as v1
    v2 = example_event("coupon.issued", 2)
    assert events.decode(v2).data == events.decode(v2, version=2).data
    with pytest.raises(couponcore.UnsupportedSchemaVersion, match="no downcast"):
        events.decode(v2, version=1)


def test_unknown_type_is_a_typed_error() -> None:
    ev = example_event("coupon.issued")
    ev.update(type="coupon.regifted", dataschema="urn:couponcore:event:coupon.regifted:v1")
    with pytest.raises(couponcore.UnknownEventType, match="coupon.regifted") as e:
        events.decode(ev)
    assert isinstance(e.value, couponcore.EventSchemaError)
    assert isinstance(e.value, couponcore.InvalidArgument) and isinstance(e.value, couponcore.Error)
    with pytest.raises(couponcore.UnknownEventType):
        events.versions("nope.nothing")


def test_unknown_or_wrong_schema_version_is_a_typed_error() -> None:
    ev = example_event("points.earned")
    ev["dataschema"] = "urn:couponcore:event:points.earned:v7"
    with pytest.raises(couponcore.UnsupportedSchemaVersion, match="v7"):
        events.decode(ev)
    for bad in (3, 0, -1, "2", 2.0, True):
        with pytest.raises(couponcore.UnsupportedSchemaVersion):
            events.decode(example_event("coupon.issued"), version=bad)
    with pytest.raises(couponcore.UnsupportedSchemaVersion):
        events.decode(example_event("points.earned"), version=2)  # points.earned has v1 only
    assert issubclass(couponcore.UnsupportedSchemaVersion, couponcore.EventSchemaError)


def test_invalid_events_are_event_schema_errors() -> None:
    good = example_event("coupon.used")
    cases: list[Any] = [
        b"\xff\xfe",
        "{not json",
        "[1, 2]",
        {**good, "specversion": "0.3"},
        {k: v for k, v in good.items() if k != "id"},
        {**good, "dataschema": "https://example.com/schema.json"},
        {**good, "dataschema": "urn:couponcore:event:coupon.issued:v1"},  # not the event's type
        {**good, "sequence": 42},  # a decimal string on the wire
        {**good, "time": "2026-12-06 09:20:00"},
        {**good, "data": {**good["data"], "order_amount": 0}},
        {**good, "data": {**good["data"], "coupon_id": "30064771075"}},
        {**good, "data": {k: v for k, v in good["data"].items() if k != "order_id"}},
    ]
    for bad in cases:
        with pytest.raises(couponcore.EventSchemaError) as e:
            events.decode(bad)
        assert type(e.value) is couponcore.EventSchemaError, (bad, e.value)
    with pytest.raises(couponcore.EventSchemaError, match="/data/order_amount"):
        events.decode(cases[-3])


def test_decode_benchmark_runs() -> None:
    """`couponcore bench decode` measures each way side by side (figures in docs/webhooks.md)."""
    from couponcore.bench import BENCHMARKS

    out = BENCHMARKS["decode"](events_per_round=50, rounds=1)
    for key in ("json_loads_per_s", "decode_per_s", "decode_v2_per_s", "json_loads_jsonschema_per_s"):
        assert out[key] > 0, out
