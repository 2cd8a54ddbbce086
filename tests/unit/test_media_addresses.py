"""The SSRF address check: every non-public address class, and embedded-IPv4 IPv6 forms."""

from __future__ import annotations

import pytest

from app.media.addresses import check_address, classify, embedded_ipv4, parse_ip

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "192.169.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]

# (address, fragment of the description, relaxed by --allow-private-media)
REFUSED = [
    # IPv4
    ("127.0.0.1", "loopback", True),
    ("127.255.255.254", "loopback", True),
    ("10.0.0.5", "private", True),
    ("172.16.0.1", "private", True),
    ("172.31.255.255", "private", True),
    ("192.168.1.1", "private", True),
    ("100.64.0.1", "carrier-grade NAT", True),
    ("100.127.255.255", "carrier-grade NAT", True),
    ("169.254.169.254", "link-local", False),
    ("169.254.0.1", "link-local", False),
    ("0.0.0.0", "unspecified", False),
    ("0.1.2.3", "this network", False),
    ("224.0.0.1", "multicast", False),
    ("239.255.255.250", "multicast", False),
    ("255.255.255.255", "broadcast", False),
    ("240.0.0.1", "reserved", False),
    ("192.0.0.8", "IETF", False),
    ("192.0.2.1", "documentation", False),
    ("198.51.100.7", "documentation", False),
    ("203.0.113.9", "documentation", False),
    ("198.18.0.1", "benchmarking", False),
    ("198.19.255.255", "benchmarking", False),
    ("192.88.99.1", "6to4 relay", False),
    # IPv6
    ("::1", "loopback", True),
    ("::", "unspecified", False),
    ("fc00::1", "unique local", True),
    ("fd12:3456:789a::1", "unique local", True),
    ("fe80::1", "link-local", False),
    ("fe80::1%eth0", "link-local", False),
    ("febf::1", "link-local", False),
    ("fec0::1", "site-local", True),
    ("ff02::1", "multicast", False),
    ("2001:db8::1", "documentation", False),
    ("3fff::1", "documentation", False),
    ("2001:2::1", "benchmarking", False),
    ("100::1", "discard-only", False),
    ("2001:10::1", "ORCHID", False),
    ("4000::1", "reserved", False),
    # IPv4 embedded in IPv6
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1", True),
    ("::ffff:10.0.0.5", "IPv4-mapped form of 10.0.0.5", True),
    ("::ffff:169.254.169.254", "IPv4-mapped form of 169.254.169.254", False),
    ("::ffff:7f00:1", "IPv4-mapped form of 127.0.0.1", True),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1", True),
    ("::10.1.2.3", "IPv4-compatible form of 10.1.2.3", True),
    ("::8.8.8.8", "deprecated IPv4-compatible", False),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1", True),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254", False),
    ("64:ff9b::c0a8:101", "NAT64 form of 192.168.1.1", True),
    ("64:ff9b:1::a00:5", "local-use NAT64", True),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1", True),
    ("2002:a9fe:a9fe::", "6to4 form of 169.254.169.254", False),
    ("2002:c0a8:101::1", "6to4 form of 192.168.1.1", True),
    # Teredo: server 65.54.227.120, client 10.0.0.1 (stored inverted: f5ff:fffe)
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo form of 10.0.0.1", True),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo form of 127.0.0.1", True),
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert check_address(address) is None
    assert check_address(address, allow_private=True) is None


@pytest.mark.parametrize(("address", "fragment", "relaxable"), REFUSED)
def test_non_public_addresses_are_refused(address: str, fragment: str, relaxable: bool) -> None:
    refusal = check_address(address)
    assert refusal is not None, address
    assert fragment in refusal.description
    assert refusal.relaxable is relaxable
    relaxed = check_address(address, allow_private=True)
    if relaxable:
        assert relaxed is None
    else:
        assert relaxed is not None, f"{address} must stay refused with --allow-private-media"


def test_refusal_message_points_at_the_flag_only_when_it_helps() -> None:
    private = check_address("10.0.0.5")
    assert private is not None
    assert private.message() == (
        "10.0.0.5 is a private address (start the server with --allow-private-media to allow it)"
    )
    assert private.message("intranet.example") == (
        "intranet.example resolves to 10.0.0.5, a private address "
        "(start the server with --allow-private-media to allow it)"
    )
    metadata = check_address("169.254.169.254")
    assert metadata is not None
    assert "--allow-private-media" not in metadata.message()


def test_garbage_is_not_an_address() -> None:
    refusal = check_address("not-an-ip")
    assert refusal is not None and not refusal.relaxable
    assert parse_ip("[::1]") == parse_ip("::1")
    assert parse_ip("fe80::1%lo") == parse_ip("fe80::1")
    assert parse_ip("example.com") is None


def test_embedded_ipv4_forms() -> None:
    def emb(text: str) -> tuple[str, str] | None:
        ip = parse_ip(text)
        assert ip is not None and ip.version == 6
        found = embedded_ipv4(ip)
        return None if found is None else (str(found[0]), found[1])

    assert emb("::ffff:1.2.3.4") == ("1.2.3.4", "IPv4-mapped")
    assert emb("::1.2.3.4") == ("1.2.3.4", "IPv4-compatible")
    assert emb("64:ff9b::102:304") == ("1.2.3.4", "NAT64")
    assert emb("2002:102:304::") == ("1.2.3.4", "6to4")
    assert emb("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ("192.0.2.45", "Teredo")
    assert emb("::1") is None
    assert emb("2606:4700::1") is None
    assert classify(parse_ip("::ffff:8.8.8.8")) is None  # type: ignore[arg-type]
