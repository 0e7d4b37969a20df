"""VM profiles: named domain shapes applied to a VMSpec in one place (``apply``, run by VMSpec's validator).

``fast-boot``: the quickest shape to the guest's first user-space output that still shuts down
gracefully (ACPI power button). q35 with SeaBIOS (no UEFI), no USB controller, no memory balloon, no RNG,
no guest-agent channel, no graphics; the serial console, ACPI and the APIC stay. When the VM boots a
kernel directly, a few kernel arguments without security cost are appended (``FAST_BOOT_ARGS``), and
kvmkit's micro-guest boots its decompressed PVH ``vmlinux`` instead of the bzImage (chosen when the VM
is created: service/vms/create.py ``resolve``, which knows the host's files).

Rules (docs/vm-profiles.md): values the caller gave explicitly win over the profile (``--machine pc``,
``balloon: true`` in an API body, ``--graphics vnc``), except ``firmware uefi``, which is refused. The
profile is remembered in kvmkit's domain metadata (key ``profile``), so ``xml_to_spec`` gives it back.
Applying it twice changes nothing (specs are re-validated after ``resolve`` fills in the kernel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kvmkit.spec.vm import VMSpec

Profile = Literal["fast-boot"]
PROFILES: tuple[str, ...] = ("fast-boot",)
META_KEY = "profile"       # <kvmkit:profile> in the domain's kvmkit metadata
KERNEL_NOTE_KEY = "boot_kernel"  # micro-guest under fast-boot: which kernel image it boots and why

# Kernel arguments appended under fast-boot when a kernel is booted directly; none weakens the guest's
# security. An argument whose key the command line already has is not added (the caller's value wins).
# Measured (QEMU CPU time to the micro-guest's ready marker, q35, TCG; docs/vm-profiles.md):
#   i8042.*            skip probing a PS/2 keyboard/mouse and PnP; left out when the VM has graphics (a
#                      VNC/SPICE user needs the keyboard)
#   cryptomgr.notests  skip the crypto self-tests at boot: ~0.24 s (FIPS mode needs them; nothing else does)
# Tried and left out: rcupdate.rcu_expedited=1, no_timer_check, tsc=reliable (no measurable gain; the last
# two made some microvm boots hang before), and mitigations=off init_on_alloc=0 audit=0 lsm= nokaslr (no
# measurable gain on top, and each costs security).
I8042_ARGS = ("i8042.noaux", "i8042.nokbd", "i8042.nopnp")
FAST_BOOT_ARGS = (*I8042_ARGS, "cryptomgr.notests")

# What the fast-boot profile sets when the caller did not: field -> value.
FAST_BOOT_SHAPE: dict[str, object] = {
    "machine": "q35", "usb": False, "balloon": False, "rng": False, "guest_agent": False,
}


def apply(spec: VMSpec) -> None:
    """Apply ``spec.profile`` to ``spec`` in place (called from VMSpec's model validator)."""
    _sync_metadata(spec)
    if spec.profile is None:
        return
    explicit = spec.model_fields_set
    if spec.firmware == "uefi":
        raise ValueError("the fast-boot profile boots with SeaBIOS and cannot use UEFI firmware (OVMF adds "
                         "seconds to every boot); drop --firmware uefi, or drop --profile fast-boot")
    for field, value in FAST_BOOT_SHAPE.items():
        if field not in explicit or getattr(spec, field) is None:
            setattr(spec, field, value)
    if spec.kernel:
        args = FAST_BOOT_ARGS if spec.graphics is None else tuple(
            a for a in FAST_BOOT_ARGS if a not in I8042_ARGS)
        spec.cmdline = with_args(spec.cmdline, args)


def with_args(cmdline: str | None, args: tuple[str, ...]) -> str:
    """``cmdline`` plus each of ``args`` whose key (the part before '=') it does not name yet."""
    words = (cmdline or "").split()
    keys = {w.split("=", 1)[0] for w in words}
    words += [a for a in args if a.split("=", 1)[0] not in keys]
    return " ".join(words)


def _sync_metadata(spec: VMSpec) -> None:
    """Keep ``profile`` and ``metadata['profile']`` the same (the metadata is what the domain XML keeps)."""
    remembered = spec.metadata.get(META_KEY)
    if remembered is not None and remembered not in PROFILES:
        raise ValueError(f"metadata key {META_KEY!r} is kvmkit's record of the VM profile, and "
                         f"{remembered!r} is not a profile; use one of {', '.join(PROFILES)} or another key")
    if spec.profile is None:
        if remembered is not None:
            spec.profile = remembered  # type: ignore[assignment]
        return
    if remembered is not None and remembered != spec.profile:
        raise ValueError(f"profile {spec.profile!r} and metadata profile={remembered!r} disagree; "
                         "give the profile once, with --profile")
    spec.metadata[META_KEY] = spec.profile
