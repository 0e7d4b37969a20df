"""Task bodies for snapshot create, revert and delete, and their start-up recovery.

Each stage of the service call is journalled before it is taken (the files a create is about to make, the
overlays a delete merges, each disk's commit and pivot), so the recovery in
:mod:`kvmkit.service.copies.snapshot_recovery` knows what an interrupted task was doing. Stages inside a
merge are not cancellable: a cancel request waits until the disk is merged.
"""

from __future__ import annotations

from typing import Any

from kvmkit.service.tasks.runner import RECOVERY, TaskContext

_PERCENT = {"files": 30, "refresh": 90, "merge-plan": 20, "commit": 30, "commit-started": 40,
            "fix-definition": 70, "remove-overlay": 80, "delete-metadata": 90}


def _journal(ctx: TaskContext, vm: str) -> Any:
    def say(step: str, data: dict[str, Any]) -> None:
        what = data.get("target") or data.get("snapshot") or ""
        ctx.step(step, _PERCENT.get(step), f"{step} {vm} {what}".strip(), cancellable=step in ("files", "merge-plan"),
                 **data)

    return say


def create_body(conn_get: Any, vm: str, name: str | None, disk_only: bool, description: str | None) -> Any:
    def run(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.service.copies import snapshots

        ctx.step("snapshot", 10, f"snapshotting VM {vm}", vm=vm, snapshot=name)
        result = snapshots.create_snapshot(conn_get(), vm, name, disk_only=disk_only, description=description,
                                           progress=_journal(ctx, vm))
        ctx.step("made", 95, f"snapshot {result['name']} of VM {vm} made", cancellable=False,
                 snapshot=result["name"])
        return result

    return run


def revert_body(conn_get: Any, vm: str, snapshot: str) -> Any:
    def run(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.service.copies import snapshots

        ctx.step("revert", 10, f"reverting VM {vm} to {snapshot}", vm=vm, snapshot=snapshot)
        result = snapshots.revert_snapshot(conn_get(), vm, snapshot)
        ctx.step("reverted", 95, f"VM {vm} reverted to {snapshot}", cancellable=False)
        return result

    return run


def delete_body(conn_get: Any, vm: str, snapshot: str) -> Any:
    def run(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.service.copies import snapshots

        ctx.step("delete-snapshot", 10, f"deleting snapshot {snapshot} of VM {vm}", vm=vm, snapshot=snapshot)
        return snapshots.delete_snapshot(conn_get(), vm, snapshot, progress=_journal(ctx, vm))

    return run


def register_recovery() -> None:
    from kvmkit.service.copies import snapshot_recovery

    RECOVERY["vm.snapshot.create"] = snapshot_recovery.recover_create
    RECOVERY["vm.snapshot.revert"] = snapshot_recovery.recover_revert
    RECOVERY["vm.snapshot.delete"] = snapshot_recovery.recover_delete
