"""The state a report is built in: its rows, the blocks written so far, the figures drawn, what is
missing, and the verdicts of its statistical tests (one ``Families`` per report).

Why a small class: every section (``section_*.py``) is a function of this object, so sections share
the rows shown (identical configurations merged), the chance levels and the figure writer without
global state, and each section module can be read on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from avbench.report import plots
from avbench.report.blocks import Block, Bullets, Figure, Para
from avbench.report.compare import Families, chance_levels, comparable_groups, merge_identical, set_fields
from avbench.report.gather import RowInfo


class Builder:
    """One report in the making; sections append blocks with ``add`` and figures with ``figure``."""

    def __init__(self, out: Path, dataset: str, infos: list[RowInfo], n_boot: int | None):
        self.out = out
        self.dataset = dataset
        self.infos = infos
        self.n_boot = n_boot
        self.families = Families(n_boot)  # Holm families and their bootstraps, computed once per report
        self.blocks: list[Block] = []
        self.missing: list[str] = []
        self.figures: list[Path] = []
        self.merged = merge_identical(infos)  # dropped row index -> the row shown for it
        self._chance = [(g, chance_levels(g)) for g in comparable_groups(infos)]
        self._set_fields: dict[int, dict[str, str] | None] = {}
        self.replication: dict[str, Any] = {}  # column -> replication.ColumnReplication (with --replicate)

    def shown(self, rows: list[RowInfo]) -> list[RowInfo]:
        """``rows`` without those merged into an identical row."""
        return [r for r in rows if r.index not in self.merged]

    def chance_of(self, r: RowInfo) -> dict[str, float | None]:
        """Per column, the chance level of the comparable group ``r`` belongs to."""
        for g, levels in self._chance:
            if any(x is r for x in g):
                return levels
        return {}

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, name: str, caption: str, draw: Callable[[Path], Any]) -> None:
        """Draw once per format: PNG (shown, inlined in the HTML) and PDF/SVG beside it for papers."""
        path = self.out / "figures" / f"{name}.png"
        if draw(path) is not None:
            self.figures.append(path)
            for ext in plots.VECTOR_FORMATS:
                draw(path.with_suffix(f".{ext}"))
            self.add(Figure(f"figures/{name}.png", caption))

    def set_fields(self, r: RowInfo) -> dict[str, str] | None:
        """The row's model fields away from its strategy's defaults (``compare.set_fields``), once per row."""
        if r.index not in self._set_fields:
            self._set_fields[r.index] = set_fields(r)
        return self._set_fields[r.index]

    def have(self, what: str) -> list[RowInfo]:
        """Rows with at least one recorded result of analysis ``what``."""
        return [r for r in self.infos if r.analyses.get(what)]

    def skipped_list(self, whats: Iterable[str], by_reason: bool = False) -> None:
        """Skipped analyses with the strategy's reason: one line per row, or per reason."""
        whats = list(whats)
        per_row: list[str] = []
        per_reason: dict[str, list[str]] = {}
        for r in self.infos:
            reasons: dict[str, list[str]] = {}
            for what in whats:
                state = r.analysis_state.get(what, "missing")
                if state.startswith("skipped"):
                    reasons.setdefault(state.split(":", 1)[-1].strip(), []).append(what)
            if reasons:
                per_row.append(f"{r.short} {r.label}: " + "; ".join(f"{', '.join(w)} skipped: {why}"
                                                                     for why, w in reasons.items()))
            for why in reasons:
                per_reason.setdefault(why, []).append(r.short)
        if by_reason and per_reason:
            self.add(Para(f"{', '.join(whats)} skipped, with the strategy's reason:"))
            self.add(Bullets([f"{', '.join(rows)}: {why}" for why, rows in per_reason.items()]))
        elif per_row:
            self.add(Para("Skipped, with the strategy's reason:"))
            self.add(Bullets(per_row))
