"""couponcore's domain events: CloudEvents 1.0 (docs/events.md).

Schemas and versioned decoding (``decode``, the typed data classes, the JSON Schema files in
``couponcore/events/schemas/``) and signed HTTP webhooks (``couponcore.events.webhooks``).
"""

from .._event_errors import EventSchemaError, UnknownEventType, UnsupportedSchemaVersion
from ._decode import (
    DATA_CLASSES,
    CampaignSoldOutV1,
    CouponExpiredV1,
    CouponIssuedV1,
    CouponIssuedV2,
    CouponUseCancelledV1,
    CouponUsedV1,
    DecodedEvent,
    PointsCancelledV1,
    PointsEarnedV1,
    PointsExpiredV1,
    PointsTransferredV1,
    PointsUsedV1,
    decode,
)
from ._schema import EVENT_TYPES, dataschema_urn, example_event, latest_version, parse_dataschema, versions
from ._schema import load as load_schema

__all__ = [
    "DATA_CLASSES",
    "EVENT_TYPES",
    "CampaignSoldOutV1",
    "CouponExpiredV1",
    "CouponIssuedV1",
    "CouponIssuedV2",
    "CouponUseCancelledV1",
    "CouponUsedV1",
    "DecodedEvent",
    "EventSchemaError",
    "PointsCancelledV1",
    "PointsEarnedV1",
    "PointsExpiredV1",
    "PointsTransferredV1",
    "PointsUsedV1",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "dataschema_urn",
    "decode",
    "example_event",
    "latest_version",
    "load_schema",
    "parse_dataschema",
    "versions",
]
