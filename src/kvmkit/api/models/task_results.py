"""Which schema each task kind's ``result`` has: the table the OpenAPI document publishes
(``x-kvmkit-results`` on Task.result) and the tests check real results against.

A route that submits a new kind adds its line here (its result model in the area's models module).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from kvmkit.api.models.tasks import RESULT_CHECK


@cache
def results() -> dict[str, type[BaseModel]]:
    """kind -> the model of its result (imported on first use: the area modules import models.tasks)."""
    from kvmkit.api.models import migration as m
    from kvmkit.api.models import storage as s
    from kvmkit.api.models import vm_copies as c
    from kvmkit.api.models import vm_guest as g
    from kvmkit.api.models import vms as v

    table: dict[str, type[BaseModel]] = {
        "vm.create": v.VMCreated,
        **{f"vm.{a}": v.VMActionDone for a in ("start", "shutdown", "reboot", "destroy", "suspend", "resume")},
        "vm.crash-restart": v.CrashRestarted,
        "vm.delete": v.VMDeleted,
        "vm.import": v.VMImported,
        "vm.seed.eject": g.SeedEjected,
        "vm.migrate": m.VMMigrated,
        "host.evacuate": m.HostEvacuated,
        "vm.snapshot.create": c.SnapshotMade,
        "vm.snapshot.revert": c.SnapshotReverted,
        "vm.snapshot.delete": c.SnapshotDeleted,
        "vm.clone": c.VMCloned,
        "vm.backup": c.Backup,
        "vm.restore": c.VMRestored,
        "vm.disk.detach": c.DeviceDetached,
        "vm.nic.detach": c.DeviceDetached,
        "pool.define": s.PoolInfo,
        "pool.build": s.PoolInfo,
        "volume.wipe": s.VolumeWiped,
        "volume.clone": s.VolumeInfo,
        "volume.upload": s.UploadResult,
        "volume.download": s.DownloadResult,
        "image.convert": s.Converted,
        "image.build": s.ImageBuilt,
        "template.provision": s.Provisioned,
    }
    return table


class UnknownKind(ValueError):
    pass


def check_result(kind: str, result: Any) -> None:
    """Validate ``result`` against ``kind``'s model (the strict check of the tests); a kind without one fails."""
    model = results().get(kind)
    if model is None:
        raise UnknownKind(f"task kind '{kind}' has no result model: add it to kvmkit/api/models/task_results.py")
    if isinstance(result, dict):
        from pydantic import ValidationError

        try:
            model.model_validate(result)
        except ValidationError as err:
            wrong = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(result)'}: {e['msg']}"
                              for e in err.errors()[:5])
            raise ValueError(f"the result of task kind '{kind}' does not fit {model.__name__} ({wrong}): fix the "
                             "model or the task's body") from None


RESULT_CHECK[:] = [check_result]
