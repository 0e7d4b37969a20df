"""One host as the inventory knows it (kept free of pydantic and SQLAlchemy: the CLI's lean paths use it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LOCAL = "local"  # the implicit host: the URI of --connect / KVMKIT_CONNECT (default qemu:///system)


@dataclass(frozen=True)
class HostRecord:
    """One host as the inventory knows it (no libvirt call made)."""

    name: str
    uri: str
    ssh_key: str | None = None
    maintenance: bool = False
    max_memory_mib: int | None = None
    cpu_overcommit: float | None = None

    @property
    def local(self) -> bool:
        return self.name == LOCAL

    @property
    def connect_uri(self) -> str:
        """The URI libvirt is opened with: ``uri`` plus the ssh key (``keyfile=``) when one is set."""
        if not self.ssh_key:
            return self.uri
        parts = urlsplit(self.uri)
        query = [*parse_qsl(parts.query), ("keyfile", self.ssh_key)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "local": self.local}
