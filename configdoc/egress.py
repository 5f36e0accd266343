"""The SSRF deny list for upstream targets.

A gateway forwards to whatever its config names, so a config writer who can point a target at the
cloud metadata service can read the node's credentials through the gateway. Targets on link-local
addresses (where every major cloud serves its metadata, 169.254.169.254) and on the well-known
metadata names are therefore refused unless an operator opts in. Loopback and private ranges stay
allowed: gateways exist to reach them.

`is_denied_target_host` checks what a config says (a literal address or a name); the data plane
checks what a name resolves to with `is_denied_address` before it connects, since a public name can
resolve to a denied address. The config-time check reads a host every way a connecting client could:
the data plane and the health probes hand the host to getaddrinfo, which encodes a non-ASCII name with
Python's IDNA 2003 codec (nameprep: NFKC and case folding, so `１６９.２５４.１６９.２５４` is
169.254.169.254, and `。` `．` `｡` separate labels), httpx uses the `idna` package's UTS #46 mapping, and
glibc's inet_aton reads decimal, octal and hex integers. A host is denied when any reading is, so the
config never accepts a target that the runtime guard would refuse on every request.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import unquote

import idna

DENIED_NETWORKS: tuple[IPv4Network | IPv6Network, ...] = (
    # IPv4 link-local: AWS, GCP, Azure, Oracle and OpenStack serve metadata at 169.254.169.254.
    IPv4Network("169.254.0.0/16"),
    # IPv6 link-local.
    IPv6Network("fe80::/10"),
    # The unspecified addresses: connecting to them reaches the local host on Linux.
    IPv4Network("0.0.0.0/32"),
    IPv6Network("::/128"),
    # AWS's instance metadata service over IPv6 (Nitro instances).
    IPv6Network("fd00:ec2::254/128"),
    # Alibaba Cloud's metadata service (inside 100.64.0.0/10, which stays allowed otherwise).
    IPv4Network("100.100.100.200/32"),
)

DENIED_HOSTNAMES: frozenset[str] = frozenset(
    {
        "metadata",  # resolves through the search domain on GCP
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",  # AWS
        "instance-data.ec2.internal",
    }
)

# RFC 6052's well-known NAT64 prefix: 64:ff9b::a9fe:a9fe reaches 169.254.169.254 through a NAT64 gateway.
_NAT64 = IPv6Network("64:ff9b::/96")

# What inet_aton (and so getaddrinfo, and the HTTP clients that use it) also accepts as an IPv4
# address: one to four parts, each decimal, octal (leading 0) or hex (0x): "2852039166", "0xa9.0xfe.43518".
_LEGACY_PART = re.compile(r"0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*", re.ASCII)

# The label separators of IDNA (RFC 3490 §3.1): full stop, ideographic, full-width and half-width ideographic.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def is_denied_address(ip: IPv4Address | IPv6Address) -> bool:
    """True when `ip` is in DENIED_NETWORKS, directly or as an IPv4-mapped or NAT64 IPv6 address."""
    if isinstance(ip, IPv6Address):
        embedded = ip.ipv4_mapped
        if embedded is None and ip in _NAT64:
            embedded = IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and is_denied_address(embedded):
            return True
    return any(ip in network for network in DENIED_NETWORKS if network.version == ip.version)


def is_denied_target_host(host: str) -> bool:
    """True when a target URL's host is a denied address or a cloud metadata name.

    Case-insensitive; tolerates IPv6 brackets, an IPv6 zone (`%eth0`, or `%25eth0` as written in a
    URL), a trailing dot, the legacy numeric IPv4 spellings that resolvers accept, and any Unicode
    spelling that IDNA/NFKC maps onto one of those (full-width or other compatibility digits, letters
    and dots).
    """
    return any(_is_denied_name(name) for name in host_readings(host))


def host_readings(host: str) -> set[str]:
    """The names a connecting client could make of `host`: as written, NFKC case-folded, through
    Python's IDNA codec (what getaddrinfo gets) and through UTS #46 (what httpx sends), with
    percent-escapes decoded and compatibility digits folded to ASCII. Lower-case, brackets, zone
    escape and trailing dots removed."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = name.replace("%25", "%")
    readings = {name, unquote(name)}
    for written in list(readings):
        folded = unicodedata.normalize("NFKC", written).casefold()
        readings.add(folded)
        readings.add("".join(_ascii_digit(character) for character in folded))
        for dotted in (written.translate(_DOTS), folded.translate(_DOTS)):
            readings.add(dotted)
            readings.add(_codec_idna(dotted))
            readings.add(_uts46(dotted))
    return {reading.lower().translate(_DOTS).rstrip(".") for reading in readings if reading}


def _is_denied_name(name: str) -> bool:
    address = _parse_address(name)
    if address is not None:
        return is_denied_address(address)
    return name in DENIED_HOSTNAMES


def _ascii_digit(character: str) -> str:
    digit = unicodedata.digit(character, None) if not character.isascii() else None
    return character if digit is None else str(digit)


def _codec_idna(name: str) -> str:
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def _uts46(name: str) -> str:
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return ""


def _parse_address(name: str) -> IPv4Address | IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    return _parse_legacy_ipv4(name)


def _parse_legacy_ipv4(name: str) -> IPv4Address | None:
    parts = name.split(".")
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_PART.fullmatch(part) for part in parts):
        return None
    values = [
        int(part, 16) if part.startswith("0x") else int(part, 8) if part.startswith("0") else int(part)
        for part in parts
    ]
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (5 - len(parts))):
        return None
    number = last
    for position, value in enumerate(leading):
        number |= value << (24 - 8 * position)
    return IPv4Address(number)
