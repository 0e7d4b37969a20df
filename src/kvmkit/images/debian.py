"""The debian-12 guest image builder (debootstrap, sealed as a template). Not built yet."""

from __future__ import annotations

from kvmkit.errors import KvmkitError


def build(out: str | None, *, force: bool = False) -> dict[str, str]:
    raise KvmkitError("the debian-12 image builder is not implemented yet", hint="use `kvmkit image build micro`")
