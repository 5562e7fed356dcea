"""Network keeps each node's parsed /etc/hosts across requests while the file's version holds.

The tick used to read every node's /etc/hosts again on each request and tick; now a read happens
only where the version changed, or where it cannot be told (the file is a symlink, or missing).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hpcgym.controller.services.access import MemoryNodeAccess
from hpcgym.controller.services.network import Network


class VersionedAccess(MemoryNodeAccess):
    """Counts reads; each write gives the file a new version, as a new ctime would."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.versions: dict[tuple[str, str], int] = {}
        self.untellable: set[str] = set()

    def read(self, node: str, path: str) -> bytes | None:
        self.reads += 1
        return super().read(node, path)

    def write(self, node: str, path: str, data: bytes, **kwargs: int) -> None:  # type: ignore[override]
        super().write(node, path, data, **kwargs)
        self.versions[(node, path)] = self.versions.get((node, path), 0) + 1

    def version(self, node: str, path: str) -> tuple[int, ...] | None:
        if node in self.untellable or (node, path) not in self.versions:
            return None
        return (self.versions[(node, path)],)


def test_hosts_are_read_again_only_when_their_version_changes() -> None:
    access = VersionedAccess()
    access.put("n1", "/etc/hosts", "10.0.0.1 n1\n10.0.0.9 ctl\n")
    network = Network(access)
    for _ in range(5):
        network.forget()
        assert network.resolve("n1", "ctl") == IPv4Address("10.0.0.9")
        assert network.resolve("n1", "n1") == IPv4Address("10.0.0.1")
    assert access.reads == 1
    access.put("n1", "/etc/hosts", "10.0.0.1 n1\n10.0.0.8 ctl\n")
    assert network.resolve("n1", "ctl") == IPv4Address("10.0.0.9")  # same request: as it was read
    network.forget()
    assert network.resolve("n1", "ctl") == IPv4Address("10.0.0.8")
    assert access.reads == 2


def test_hosts_whose_version_cannot_be_told_are_read_every_request() -> None:
    access = VersionedAccess()
    access.put("n1", "/etc/hosts", "10.0.0.9 ctl\n")
    access.untellable.add("n1")
    network = Network(access)
    for _ in range(3):
        network.forget()
        network.resolve("n1", "ctl")
        network.resolve("n1", "ctl")
    assert access.reads == 3
