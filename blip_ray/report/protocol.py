"""The report of a spec with ``search:``: the final runs' comparison (on test), then how each
method's configuration was chosen (on validation) and every search configuration's score.

The run's directory holds ``search/`` and ``final/``, each with its own full report; this one,
``report.md`` at the top, leads with the final table and its statistics (bootstrap intervals,
IQM, probability of improvement) and copies the final stage's ``table.csv``, ``table.tex`` and
``improvement.csv`` beside it, so the numbers to cite are at the top level.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from blip_ray.errors import UserError
from blip_ray.records.layout import (
    FINAL_STAGE,
    SEARCH_STAGE,
    SELECTION_FILE,
    read_json,
    read_spec_record,
)
from blip_ray.records.trials import load_trials
from blip_ray.report.selection import selection_markdown

REPORT_FILE = "report.md"
COPIED = ("table.csv", "table.tex", "improvement.csv")
"""The final stage's files copied to the run's directory."""


def is_protocol_dir(path: Path) -> bool:
    """Whether ``path`` is the directory of a spec with ``search:`` (not one of its stages)."""
    return (Path(path) / SEARCH_STAGE).is_dir() or (Path(path) / SELECTION_FILE).is_file()


def write_protocol_report(top: Path) -> str:
    """Write ``top/report.md`` (and the final stage's tables beside it); returns what to print:
    the final table and the selection."""
    top = Path(top)
    record = read_json(top / SELECTION_FILE)
    if record is None:
        raise UserError(
            f"{top}: the search has not finished, so nothing is selected yet; resume the run "
            f"(blip-ray run SPEC --resume --name {top.name}), or report the search stage alone: "
            f"blip-ray report {top / SEARCH_STAGE}"
        )
    spec = read_spec_record(top) or {}
    final_dir = top / FINAL_STAGE
    trials = load_trials(final_dir) if final_dir.is_dir() else []
    table, tested = "(the final stage has not started)", []
    if trials:
        table, tested = _final_sections(final_dir / REPORT_FILE)
    selection = selection_markdown(record)
    lines = [
        f"# {spec.get('name', top.name)} ({spec.get('benchmark', '?')}): chosen on validation, "
        "reported on test",
        "",
        "Each method's configuration was chosen by the search below on validation scores only; "
        f"the table is its final runs on the seeds the search never used "
        f"({', '.join(map(str, record['final_seeds']))}), scored on test.",
        "",
        table,
        "",
        *tested,
        "",
        f"Full reports: [final stage]({FINAL_STAGE}/{REPORT_FILE}) (statistics, plots, "
        f"provenance with the selection), [search stage]({SEARCH_STAGE}/{REPORT_FILE}).",
        "",
        selection,
    ]
    (top / REPORT_FILE).write_text("\n".join(lines))
    for name in COPIED:
        if (final_dir / name).exists():
            shutil.copyfile(final_dir / name, top / name)
    return f"{table}\n\n{selection}"


def _final_sections(report: Path) -> tuple[str, list[str]]:
    """The final stage's results table and Statistics section, as its report.md (just written by
    the same code) has them: the bootstrap is not drawn twice."""
    lines = report.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Results") + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    first = lines.index("## Statistics")
    last = next(i for i in range(first, len(lines)) if lines[i].startswith("improvement.csv"))
    return "\n".join(lines[start:end]), ["", *lines[first : last + 1]]
