"""Which local addresses a TCP port listens on, read from the kernel's socket tables (Linux)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

LISTEN_STATE = "0A"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def listening_addresses(port: int) -> set[str]:
    """Addresses with a socket listening on ``port`` (``0.0.0.0`` / ``::`` mean every interface)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == LISTEN_STATE and int(port_hex, 16) == port:
                found.add(str(_address(address)))
    return found
