"""Write bench/RESULTS.md: the machine, the run, and one table row per scenario case and metric."""

from __future__ import annotations

from pathlib import Path

from bench.common import Row, Series


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:.1f} {unit}"


def cell(s: Series | None, unit: str, missing: str) -> str:
    if s is None or not s.samples:
        return missing or "—"
    text = f"**{fmt(s.median, unit)}**"
    if len(s.samples) > 1:
        lo, hi = s.spread
        text += f" ({fmt(lo, unit)} – {fmt(hi, unit)}, n={len(s.samples)})"
    if s.note:
        text += f"; {s.note}"
    return text


def ratio(row: Row) -> str:
    k, p = row.kvmkit, row.peer
    if not k or not p or not k.samples or not p.samples or k.median <= 0 or p.median <= 0:
        return "—"
    r = k.median / p.median if row.higher_is_better else p.median / k.median
    return f"{r:.2f}×"


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _target(r: Row) -> str:
    if not r.target:
        return "—"
    if r.met is None or r.kvmkit is None or not r.kvmkit.samples:
        return r.target
    return f"{r.target}: {'met' if r.met(r) else '**not met**'}"


def table(rows: list[Row]) -> str:
    out = ["| Scenario | Case | Metric | kvmkit: median (min – max, n) | Peer | Peer: median (min – max, n) "
           "| Peer ÷ kvmkit | Target |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(_esc(x) for x in (
            r.scenario, r.case, r.metric, cell(r.kvmkit, r.unit, r.kvmkit_missing), r.peer_name or "—",
            cell(r.peer, r.unit, r.peer_missing), ratio(r), _target(r))) + " |")
    return "\n".join(out)


def write(path: Path, *, rows: list[Row], machine: dict[str, str], run_info: dict[str, str],
          notes: list[str], sections: dict[str, str] | None = None) -> None:
    lines = ["# kvmkit benchmark results", "",
             "Written by `bench/run` (see bench/README.md). Every figure in a row was measured in the same run "
             "on the same machine; the peer is the tool kvmkit replaces. **Peer ÷ kvmkit** above 1 means "
             "kvmkit is faster (for req/s: kvmkit ÷ peer).", "", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in run_info.items()]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_esc(v)} |" for k, v in machine.items()]
    ordered = sorted(rows, key=lambda r: int(r.scenario.split(".")[0]))  # stable: cases keep their order
    lines += ["", "## Results", "", table(ordered), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in sorted(notes, key=lambda n: n[:2])] + [""]
    for title, text in (sections or {}).items():
        lines += [f"## {title}", "", "```xml", text.rstrip(), "```", ""]
    path.write_text("\n".join(lines))
