"""Figures measured side by side, printed as a table and kept as JSON with their targets."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Figure:
    """One measurement, what it is compared with, and the target it is held to."""

    scenario: str
    measured: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def print_table(figures: list[Figure]) -> None:
    """The figures as an aligned text table."""
    header = ("scenario", "measured", "value", "reference", "ratio", "target", "met")
    rows = [
        (
            f.scenario,
            f.measured,
            f"{f.value:,.3f} {f.unit}".rstrip(),
            f.reference + (f" = {f.reference_value:,.3f}" if f.reference_value is not None else ""),
            "" if f.ratio is None else f"{f.ratio:.3f}",
            f.target,
            {True: "yes", False: "NO", None: ""}[f.met],
        )
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json(path: Path, figures: list[Figure], *, quick: bool) -> None:
    """Write ``figures`` to ``path``, replacing the rows of the scenarios just measured.

    Rows of other scenarios stay, so one scenario can be re-measured alone; each row
    keeps the machine and time it was measured on.
    """
    measured = {f.scenario for f in figures}
    kept: list[dict[str, object]] = []
    if path.exists():
        previous = json.loads(path.read_text())
        kept = [row for row in previous.get("figures", []) if row["scenario"] not in measured]
    stamp = {"machine": machine(), "quick": quick}
    rows = kept + [asdict(f) | stamp for f in figures]
    rows.sort(key=lambda row: str(row["scenario"]))
    path.write_text(json.dumps({"figures": rows}, indent=2, ensure_ascii=False) + "\n")
