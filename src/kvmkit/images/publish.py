"""Putting a finished build into kvmkit's image cache in one step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def publish(work: Path, dest: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` into the build directory ``work``, make it world-readable, and move it to
    ``dest`` (replacing an older copy), so readers see a whole build or none."""
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for p in (work, *work.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    if dest.exists():
        shutil.rmtree(dest)
    work.rename(dest)
