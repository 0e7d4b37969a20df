"""Asking several hosts at once: each in its own thread, the answer after at most ``timeout`` seconds.

A host that does not answer in time, or is down, is reported (``hosts``: name, state, error) and not
waited on: the answer holds what the other hosts said. Threads are daemons: a call stuck on a host whose
address stopped answering (TCP gives up after ~2 min) never holds up the caller nor the end of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from kvmkit.errors import KvmkitError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 5.0


@dataclass
class HostAnswer:
    name: str
    state: str  # up | down | timeout | error
    error: str | None = None
    vms: int | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ask_hosts(calls: list[tuple[str, Callable[[], T]]], timeout: float = DEFAULT_TIMEOUT_S
              ) -> list[tuple[HostAnswer, T | None]]:
    """Run every ``(host name, fn)`` concurrently; after ``timeout`` s the hosts still busy are 'timeout'."""
    done = threading.Semaphore(0)
    results: dict[int, tuple[HostAnswer, T | None]] = {}
    start = time.monotonic()

    def run(i: int, name: str, fn: Callable[[], T]) -> None:
        t0 = time.monotonic()
        try:
            out = fn()
            results[i] = (HostAnswer(name, "up", seconds=round(time.monotonic() - t0, 3)), out)
        except KvmkitError as err:
            state = "down" if err.code in ("host_down", "host") else "error"
            results[i] = (HostAnswer(name, state, err.message, seconds=round(time.monotonic() - t0, 3)), None)
        except Exception as err:  # a libvirt error the service layer did not map
            results[i] = (HostAnswer(name, "error", str(err), seconds=round(time.monotonic() - t0, 3)), None)
        finally:
            done.release()

    for i, (name, fn) in enumerate(calls):
        threading.Thread(target=run, args=(i, name, fn), name=f"kvmkit-ask-{name}", daemon=True).start()
    for _ in calls:
        left = timeout - (time.monotonic() - start)
        if left <= 0 or not done.acquire(timeout=left):
            break
    out: list[tuple[HostAnswer, T | None]] = []
    for i, (name, _fn) in enumerate(calls):
        got = results.get(i)
        out.append(got if got is not None else
                   (HostAnswer(name, "timeout", f"no answer in {timeout:g} s", seconds=timeout), None))
    return out


def list_vms_across(targets: list[tuple[str, Callable[[], Any]]], *, include_inactive: bool = True,
                    ips: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The VMs of every ``(host name, get connection)``: ``{"vms": rows, "hosts": answers}``.

    Rows are ``service.vms.query.list_vms`` rows with ``host`` = the host's name, sorted by name then host
    (names are unique per host, not across hosts)."""
    from kvmkit.service.vms.query import list_vms

    def one(name: str, get_conn: Callable[[], Any]) -> Callable[[], list[dict[str, Any]]]:
        return lambda: list_vms(get_conn(), include_inactive=include_inactive, ips=ips, host=name)

    answers = ask_hosts([(name, one(name, get)) for name, get in targets], timeout)
    rows: list[dict[str, Any]] = []
    hosts = []
    for answer, got in answers:
        if got is not None:
            answer.vms = len(got)
            rows += got
        hosts.append(answer.to_dict())
    rows.sort(key=lambda r: (r["name"], r["host"]))
    return {"vms": rows, "hosts": hosts}
