"""Which IP addresses the media fetcher may connect to (the SSRF guard).

The table is explicit (not ``ipaddress.is_private``/``is_global``, whose answers changed between
Python patch releases). IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
NAT64, 6to4, Teredo) are judged by the embedded address.

Classes ``loopback``, ``private`` and ``shared`` (CGNAT) are *internal*: allowed with
``--allow-private-media``. Every other refusal (link-local, which holds cloud metadata
endpoints such as 169.254.169.254, multicast, broadcast, unspecified, reserved, documentation,
benchmarking) is never relaxed: nothing legitimate is served there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

INTERNAL = "internal"  # relaxed by --allow-private-media
NEVER = "never"


@dataclass(frozen=True)
class Refusal:
    address: str
    description: str  # "a private address", "a link-local address", ...
    relaxable: bool

    def message(self, host: str | None = None) -> str:
        """Why the fetch is refused; ``host`` names the DNS name that led to the address."""
        if host is not None and host != self.address:
            text = f"{host} resolves to {self.address}, {self.description}"
        else:
            text = f"{self.address} is {self.description}"
        if self.relaxable:
            text += " (start the server with --allow-private-media to allow it)"
        return text


def _nets(*items: tuple[str, str, str]) -> list[tuple[ipaddress._BaseNetwork, str, str]]:
    return [(ipaddress.ip_network(net), desc, cls) for net, desc, cls in items]


# Order matters: the first match wins (broadcast before 240/4, specific before general).
_V4_TABLE = _nets(
    ("0.0.0.0/32", "the unspecified address", NEVER),
    ("0.0.0.0/8", "a 'this network' address (0.0.0.0/8)", NEVER),
    ("10.0.0.0/8", "a private address", INTERNAL),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address", INTERNAL),
    ("127.0.0.0/8", "a loopback address", INTERNAL),
    ("169.254.0.0/16", "a link-local address (cloud metadata lives here)", NEVER),
    ("172.16.0.0/12", "a private address", INTERNAL),
    ("192.0.0.0/24", "an IETF protocol-assignment address", NEVER),
    ("192.0.2.0/24", "a documentation address", NEVER),
    ("192.88.99.0/24", "a 6to4 relay anycast address", NEVER),
    ("192.168.0.0/16", "a private address", INTERNAL),
    ("198.18.0.0/15", "a benchmarking address", NEVER),
    ("198.51.100.0/24", "a documentation address", NEVER),
    ("203.0.113.0/24", "a documentation address", NEVER),
    ("224.0.0.0/4", "a multicast address", NEVER),
    ("255.255.255.255/32", "the broadcast address", NEVER),
    ("240.0.0.0/4", "a reserved address", NEVER),
)

_V6_TABLE = _nets(
    ("::/128", "the unspecified address", NEVER),
    ("::1/128", "a loopback address", INTERNAL),
    ("64:ff9b:1::/48", "a local-use NAT64 address", INTERNAL),
    ("100::/64", "a discard-only address", NEVER),
    ("2001:2::/48", "a benchmarking address", NEVER),
    ("2001:10::/28", "a reserved (ORCHID) address", NEVER),
    ("2001:20::/28", "a reserved (ORCHIDv2) address", NEVER),
    ("2001:db8::/32", "a documentation address", NEVER),
    ("3fff::/20", "a documentation address", NEVER),
    ("fc00::/7", "a private (unique local) address", INTERNAL),
    ("fe80::/10", "a link-local address", NEVER),
    ("fec0::/10", "a private (site-local) address", INTERNAL),
    ("ff00::/8", "a multicast address", NEVER),
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def parse_ip(text: str) -> IPAddress | None:
    """An IP address from ``text`` (brackets and an IPv6 zone id allowed), or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries (and the form's name), if any."""
    if ip in _MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in _COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF), "6to4"
    if ip in _TEREDO:
        teredo = ip.teredo
        if teredo is not None:
            return teredo[1], "Teredo"
    return None


def classify(ip: IPAddress) -> Refusal | None:
    """Why ``ip`` must not be fetched from (ignoring --allow-private-media), or None if public."""
    if isinstance(ip, ipaddress.IPv4Address):
        for net, desc, cls in _V4_TABLE:
            if ip in net:
                return Refusal(str(ip), desc, cls == INTERNAL)
        return None
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        v4, form = embedded
        inner = classify(v4)
        if inner is not None:
            return Refusal(
                str(ip), f"the {form} form of {v4}, {inner.description}", inner.relaxable
            )
        if form == "IPv4-compatible":
            return Refusal(str(ip), "a deprecated IPv4-compatible address", False)
        return None
    for net, desc, cls in _V6_TABLE:
        if ip in net:
            return Refusal(str(ip), desc, cls == INTERNAL)
    if ip not in _GLOBAL_UNICAST:
        return Refusal(str(ip), "a reserved address", False)
    return None


def check_address(ip: IPAddress | str, *, allow_private: bool = False) -> Refusal | None:
    """The refusal for connecting to ``ip`` under the given policy, or None when allowed."""
    parsed = parse_ip(ip) if isinstance(ip, str) else ip
    if parsed is None:
        return Refusal(str(ip), "not an IP address", False)
    refusal = classify(parsed)
    if refusal is None or (allow_private and refusal.relaxable):
        return None
    return refusal
