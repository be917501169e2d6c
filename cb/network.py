"""Who may reach the server, and where the server may reach: Host names, browser origins,
exposed listeners, and the addresses a configured base URL may point at.

Defaults follow the exposure: a port that requires client keys accepts any Host and any
origin; a port that does not accepts only loopback origins and the machine's own names,
so a web page or a DNS-rebinding name cannot drive it from the operator's browser.
Base URLs may name loopback and private addresses (local model servers), never
link-local ones (169.254.0.0/16, fe80::/10: cloud metadata services).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit

from cb.errors import ValidationError

LOOPBACK_ORIGINS = (r"^https?://localhost(:\d+)?$", r"^https?://127\.0\.0\.1(:\d+)?$", r"^https?://\[::1\](:\d+)?$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def machine_names() -> set[str]:
    """Loopback names and this machine's own host names, lower case."""
    names = set(_LOOPBACK_NAMES)
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return names


class HostCheck:
    """ALLOWED_HOSTS: ``*`` allows any Host; otherwise names (``.example.com`` = that domain and
    its subdomains), and IP literals are always allowed. Answers are remembered per header
    value: a port sees the same few on every request."""

    REMEMBERED = 1024

    def __init__(self, allowed: tuple[str, ...]):
        self.any = "*" in allowed
        self.names = {h.lower().rstrip(".") for h in allowed if not h.startswith(".")}
        self.domains = tuple(h.lower().rstrip(".") for h in allowed if h.startswith("."))
        self.allows = functools.lru_cache(maxsize=self.REMEMBERED)(self._allows)

    def _allows(self, host_header: str | None) -> bool:
        """Whether a request with this Host header is served (``allows``, remembered)."""
        if self.any:
            return True
        host = _hostname(host_header or "")
        if not host:
            return False
        if _is_ip(host):
            return True
        return host in self.names or any(host == d[1:] or host.endswith(d) for d in self.domains)


def _hostname(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") <= 1 else header


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_loopback_bind(host: str) -> bool:
    """True when a listener address reaches only this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- where base URLs may point ---------------------------------------------------------


def forbidden_address(address: str) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10, cloud metadata) addresses, also IPv4-mapped."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_link_local


def check_base_url(url: str, field: str = "base_url") -> str:
    """Refuse a base URL whose host is, or resolves to, a link-local address. A name that does
    not resolve now is accepted (the server may come up later); connect time checks again."""
    host = urlsplit(url).hostname or ""
    addresses = [host]
    if not _is_ip(host.split("%", 1)[0]):
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            addresses = []
    if any(forbidden_address(a) for a in addresses):
        raise ValidationError(f"{field} {url!r} points at a link-local or metadata address, which is not allowed")
    return url


def exposure_warnings(settings) -> list[str]:
    """One line per port listening beyond loopback without client authentication."""
    lines = []
    providers = [v for v in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY") if getattr(settings, v.lower())]
    if not is_loopback_bind(settings.openai_host) and providers and not settings.openai_api_key_required:
        lines.append(
            f"the OpenAI API listens on {settings.openai_host}:{settings.openai_port} and spends "
            f"the provider keys ({', '.join(providers)}) for any client without a key; "
            "set OPENAI_API_KEY_REQUIRED=true (with CB_API_KEYS) or OPENAI_HOST=127.0.0.1 to close it"
        )
    if not is_loopback_bind(settings.graphql_host) and not settings.graphql_api_key:
        lines.append(
            f"the GraphQL API listens on {settings.graphql_host}:{settings.graphql_port} and "
            "lets any client change workflows, providers and keys; set GRAPHQL_API_KEY or "
            "GRAPHQL_HOST=localhost to close it"
        )
    return lines


def send_all(sock, data) -> None:
    """``sock.sendall(data)`` in one system call when the socket's buffer takes it all, as it
    nearly always does for a request or a response part. gevent's ``sendall`` first asks the
    kernel for the socket's buffer size (a ``getsockopt`` on every call, for a PyPy copying
    workaround); ``send`` does not, and waits on a full buffer as ``sendall`` would."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
