"""Which client a request comes from, when proxies stand in front of the server.

X-Forwarded-For can be written by anyone, so it is believed only when the direct peer
is a trusted proxy (TRUSTED_PROXIES: addresses or networks, e.g. ``127.0.0.1,10.0.0.0/8``).
The header is then read from the right, skipping further trusted proxies; the first
untrusted address is the client.
"""

from __future__ import annotations

import ipaddress

from cb.config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The TRUSTED_PROXIES list, and the client address it implies for one request."""

    def __init__(self, entries: tuple[str, ...] | list[str] = ()):
        self.networks: list[Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"TRUSTED_PROXIES entry {entry!r} is not an address or network") from None

    def trusts(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is not None and any(parsed in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The peer itself, unless it is trusted and names the client in X-Forwarded-For."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            parsed = _address(hop)
            if parsed is None:
                return peer  # a malformed header: trust nothing in it
            if not self.trusts(hop):
                return str(parsed)
        return str(_address(hops[0])) if hops else peer
