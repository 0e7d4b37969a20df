"""TaskRunner on a real SQLite store: steps journalled in order with progress, events published from the
rows written, cancel honoured at the next step, one task per object, ten tasks at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmkit.service.tasks.runner import Busy, TaskContext, TaskRunner
from kvmkit.store.db import Store


@pytest.fixture()
def runner(tmp_path: Path) -> Iterator[tuple[TaskRunner, list[dict[str, Any]]]]:
    store = Store(f"sqlite:///{tmp_path}/kvmkit.db")
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def publish(event: dict[str, Any]) -> None:
        with lock:
            events.append(event["task"])

    r = TaskRunner(store, workers=10, publish=publish)
    yield r, events
    r.shutdown()
    store.engine.dispose()


def wait(r: TaskRunner, task_id: str, timeout: float = 120) -> dict[str, Any]:  # a guard: milliseconds when idle
    deadline = time.monotonic() + timeout
    while (t := r.get(task_id, steps=True))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, t
        time.sleep(0.02)
    return t


@pytest.mark.fast
def test_steps_are_journalled_in_order_and_published(runner) -> None:
    r, events = runner

    def body(ctx: TaskContext) -> dict[str, Any]:
        ctx.step("one", 10, "first", vm="x")
        ctx.step("two", 60)
        return {"ok": True}

    task = wait(r, r.submit("test.steps", "vm:x", body)["id"])
    assert task["state"] == "succeeded" and task["percent"] == 100 and task["result"] == {"ok": True}
    assert [(s["seq"], s["name"]) for s in task["steps"]] == [(1, "one"), (2, "two")]
    assert task["steps"][0]["data"] == {"vm": "x"}
    # the final event is published just after the task is recorded as finished: wait for it, then compare all
    deadline = time.monotonic() + 120
    while not [e for e in list(events) if e["id"] == task["id"] and e["state"] == "succeeded"]:
        assert time.monotonic() < deadline, events
        time.sleep(0.02)
    mine = [e for e in events if e["id"] == task["id"]]
    assert [(e["state"], e["percent"], e["message"]) for e in mine] == [
        ("running", 0, "running"), ("running", 10, "first"), ("running", 60, "two"), ("succeeded", 100, "done")]


@pytest.mark.fast
def test_cancel_stops_at_the_next_step_and_journals_nothing_more(runner) -> None:
    r, _events = runner
    gate = threading.Event()

    def body(ctx: TaskContext) -> None:
        ctx.step("before", 10)
        assert gate.wait(120)  # the test cancels, then opens the gate
        ctx.step("after", 50)  # raises Cancelled

    tid = r.submit("test.cancel", "vm:c", body)["id"]
    while not r.get(tid, steps=True)["steps"]:
        time.sleep(0.01)
    with pytest.raises(Busy):
        r.submit("test.cancel", "vm:c", body)
    r.cancel(tid)
    gate.set()
    task = wait(r, tid)
    assert task["state"] == "cancelled"
    assert [s["name"] for s in task["steps"]] == ["before"]


@pytest.mark.fast
def test_ten_tasks_at_once_each_keep_their_own_journal(runner) -> None:
    r, _events = runner

    def body(ctx: TaskContext) -> None:
        for i in range(5):
            ctx.step(f"s{i}", 20 * i)

    ids = [r.submit("test.ten", f"vm:t{i}", body)["id"] for i in range(10)]
    for tid in ids:
        task = wait(r, tid)
        assert task["state"] == "succeeded", task["error"]
        assert [s["name"] for s in task["steps"]] == [f"s{i}" for i in range(5)]
