"""The typed errors of event decoding (couponcore.events).

Kept outside the ``events`` package so that ``import couponcore`` can export them without importing
the event code. All three are ``InvalidArgument``: the event a consumer was handed is not one it can
read, and retrying the same event cannot help.
"""

from __future__ import annotations

from ._core import InvalidArgument


class EventSchemaError(InvalidArgument):
    """An event that is not a valid couponcore CloudEvent, or whose data fails its JSON Schema."""


class UnknownEventType(EventSchemaError):
    """The event's ``type`` is none of the catalogue's (docs/events.md)."""


class UnsupportedSchemaVersion(EventSchemaError):
    """The event's schema version (``dataschema``) or the version asked for is not one this package knows,
    or is older than the event's own (there is no downcast)."""
