"""Webhooks refuse internal addresses (SSRF): literal ones when the endpoint is configured, names
that resolve to one when connecting (the address checked is the address connected to), unless
the endpoint or the config allows private networks. A real receiver and real name resolution."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import couponcore
import pytest
from couponcore.events import example_event, webhooks
from couponcore.events.webhooks import MemoryDeadLetters, WebhookEndpoint, WebhookMetrics, WebhookSender
from test_webhooks import SECRET, Receiver

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.5.4": "private",
    "192.168.0.1": "private",
    "fd12:3456::1": "private",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "224.0.0.251": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "100.64.0.1": "not globally routable",
}


def test_refused_addresses_by_kind() -> None:
    for address, kind in REFUSED.items():
        assert webhooks.refused_kind(address) == kind, address
    for public in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert webhooks.refused_kind(public) is None, public


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "10.0.0.5",
        "169.254.169.254",
        "[fe80::1]",
        "224.0.0.1",
        "0.0.0.0",
        "localhost",
        "api.localhost",
        "[::ffff:127.0.0.1]",
        "192.168.1.20",
    ],
)
def test_literal_internal_hosts_are_refused_at_configuration(host: str, tmp_path: Any) -> None:
    url = f"https://{host}:8443/hook"
    with pytest.raises(couponcore.InvalidArgument, match="allow_private_networks"):
        WebhookEndpoint(name="crm", url=url, secret=SECRET)
    assert WebhookEndpoint(name="crm", url=url, secret=SECRET, allow_private_networks=True).allow_private_networks
    path = tmp_path / "hooks.json"
    entry = {"name": "crm", "url": url, "secret": SECRET}
    path.write_text(json.dumps({"webhooks": [entry]}))
    with pytest.raises(couponcore.InvalidArgument, match="allow_private_networks"):
        webhooks.load_config(str(path))
    path.write_text(json.dumps({"allow_private_networks": True, "webhooks": [entry]}))
    assert webhooks.load_config(str(path))[0].allow_private_networks
    path.write_text(
        json.dumps({"allow_private_networks": True, "webhooks": [{**entry, "allow_private_networks": False}]})
    )
    with pytest.raises(couponcore.InvalidArgument):
        webhooks.load_config(str(path))  # the entry's own word wins
    for bad in ({"allow_private_networks": "yes", "webhooks": [entry]}, {"webhooks": [entry], "other": 1}):
        path.write_text(json.dumps(bad))
        with pytest.raises(couponcore.InvalidArgument):
            webhooks.load_config(str(path))
    with pytest.raises(couponcore.InvalidArgument):
        WebhookEndpoint(name="crm", url=url, secret=SECRET, allow_private_networks=1)  # type: ignore[arg-type]


def test_public_hosts_and_names_pass_configuration() -> None:
    for url in ("https://hooks.example.com/x", "https://8.8.8.8/x", "https://[2606:4700:4700::1111]/x"):
        assert not WebhookEndpoint(name="crm", url=url, secret=SECRET).allow_private_networks


def _internal_name() -> str:
    """This machine's host name when it resolves only to refused addresses (a real resolution)."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"the host name {name!r} does not resolve")
    if any(webhooks.refused_kind(str(i[4][0])) is None for i in infos) or name.endswith("localhost"):
        pytest.skip(f"the host name {name!r} resolves to a public address")
    return name


def test_a_name_resolving_to_an_internal_address_fails_like_a_network_error(caplog: Any) -> None:
    """The receiver listens on every interface, so the name reaches it when private networks are
    allowed; by default every attempt is refused before connecting, counted as a network error,
    logged, and the event is dead-lettered with the reason. Nothing reaches the receiver."""
    name = _internal_name()
    receiver = Receiver(host="0.0.0.0")
    try:
        url = f"http://{name}:{receiver.port}/hooks"
        opts: dict[str, Any] = {"max_attempts": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 5}
        dl, metrics = MemoryDeadLetters(), WebhookMetrics()
        with caplog.at_level(logging.INFO, logger="couponcore.webhooks"):
            with WebhookSender(WebhookEndpoint(name="crm", url=url, secret=SECRET, **opts), dl, metrics=metrics) as s:
                out = s.deliver(example_event("coupon.issued"))
        assert (out.outcome, out.attempts, out.status) == ("dead_lettered", 2, None)
        assert "refused addresses" in dl.items[0].reason and dl.items[0].reason.startswith(
            "network error: ConnectError"
        )
        assert metrics.snapshot()["attempts"] == {"crm": {"network_error": 2}}
        assert any("refused addresses" in r.getMessage() for r in caplog.records)
        assert receiver.requests == []
        allowed = WebhookEndpoint(name="crm", url=url, secret=SECRET, allow_private_networks=True, **opts)
        with WebhookSender(allowed, MemoryDeadLetters()) as s:
            assert s.deliver(example_event("coupon.issued")).outcome == "delivered"
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
