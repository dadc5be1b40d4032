"""Where webhooks may connect: refusing internal addresses (SSRF), checked on the address
actually connected to.

A webhook URL comes from configuration, and a host name in it is resolved at each new
connection: a name that resolves to an internal address (or is rebound to one after a check, DNS
rebinding) would let whoever writes the URL, or controls its DNS, make this process post to
services that trust its network. So, unless the endpoint allows private networks:

- a URL whose host is a literal IP address that is refused, or ``localhost`` (``*.localhost``),
  is ``InvalidArgument`` when the endpoint is configured (:func:`check_literal_host`);
- every connection resolves the host once, drops the refused addresses, and connects to one of
  the remaining addresses itself (:class:`GuardedTransport`): the address checked is the address
  connected to. A host with no address left fails the attempt like a network error (retried, then
  dead-lettered; counted as ``network_error`` and logged).

Refused: loopback, private (RFC 1918, RFC 4193 unique local), link-local (169.254.0.0/16 with
the cloud metadata address 169.254.169.254, fe80::/10), multicast, unspecified, and any other
address that is not globally routable (shared address space, documentation and reserved
ranges); an IPv4-mapped IPv6 address is judged by its IPv4 address. TLS still verifies the
certificate against the host name (SNI included). Environment proxies are not used for such an
endpoint (a proxy would make the connection on its own terms).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any, Optional, Union

from .._core import InvalidArgument

log = logging.getLogger("couponcore.webhooks")

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
)


def refused_kind(address: Union[str, Address]) -> Optional[str]:
    """Why a webhook may not connect to ``address`` ("loopback", "private", ...), None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attribute, kind in _KINDS:
        if getattr(ip, attribute):
            return kind
    return None if ip.is_global else "not globally routable"


def check_literal_host(name: str, url: str, host: str) -> None:
    """InvalidArgument when ``host`` (of endpoint ``name``'s URL) is a refused literal address or
    ``localhost``: configuration errors found before any delivery."""
    bare = host.strip("[]").lower().rstrip(".")
    if bare == "localhost" or bare.endswith(".localhost"):
        kind: Optional[str] = "loopback"
    else:
        try:
            kind = refused_kind(bare)
        except ValueError:
            return  # a name: checked at each connection
    if kind is not None:
        raise InvalidArgument(
            f"webhook {name}: URL {url!r} points at a {kind} address; webhooks go to public addresses "
            "unless the endpoint (or the config) sets allow_private_networks"
        )


def _backend_class() -> Any:
    import httpcore

    class GuardedBackend(httpcore.SyncBackend):  # type: ignore[misc]
        """Resolves, drops refused addresses, connects to a checked address itself."""

        def __init__(self, endpoint: str) -> None:
            self.endpoint = endpoint

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: Optional[float] = None,
            local_address: Optional[str] = None,
            socket_options: Any = None,
        ) -> Any:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                raise httpcore.ConnectError(f"{host}: {e}") from None
            allowed, refused = [], []
            for info in infos:
                address = str(info[4][0])
                kind = refused_kind(address)
                (refused if kind else allowed).append(address if not kind else f"{address} ({kind})")
            if not allowed:
                message = f"{host} resolves only to refused addresses: {', '.join(dict.fromkeys(refused))}"
                log.warning("webhook %s: %s", self.endpoint, message)
                raise httpcore.ConnectError(message)
            last: Optional[Exception] = None
            for address in dict.fromkeys(allowed):  # each checked address, in the resolver's order
                try:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                except httpcore.ConnectError as e:
                    last = e
            assert last is not None
            raise last

    return GuardedBackend


def guarded_transport(endpoint: str) -> Any:
    """An httpx transport that connects only to addresses :func:`refused_kind` allows (TLS checked
    against the URL's host name). The pool is httpx's own, with the guarded network backend."""
    import httpcore
    import httpx

    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=_backend_class()(endpoint),
    )
    return transport
