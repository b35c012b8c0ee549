"""Single-task reference runs -> the per-task reference returns (the 1 of RL normalization).

A references experiment (``blip-ray run SPEC --references``) trains PPO on each task of an RL
sequence alone, per seed (:meth:`blip_ray.rl.sequences.RlSequence.single_task`). Each trial's one
result is the raw evaluation return after its task's budget; a task's reference return is the mean
over its seeds. :func:`write_references` writes them to ``reference_returns.yaml`` (the file
``blip-ray report --reference-returns`` reads) and a ``report.md`` that also shows how the return
grew over the budget (from the learning curves) against the random policy's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blip_ray import metrics
from blip_ray.records.trials import TrialResult
from blip_ray.report.tables import cell

REFERENCE_FILE = "reference_returns.yaml"
#: Fractions of the budget at which the report reads each task's learning curve.
CURVE_FRACTIONS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Reference:
    """One task's single-task reference over its seeds."""

    task: str
    returns: list[float]
    """Raw evaluation return after the budget, one per seed (ok trials)."""
    seeds: list[int]
    random: float
    """The uniformly random policy's return, mean over the seeds' evaluations."""
    along: list[float]
    """Mean return over seeds at each of :data:`CURVE_FRACTIONS` of the budget (NaN: no curve)."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))


def references(trials: Sequence[TrialResult]) -> list[Reference]:
    """Each task's reference from the ok trials (one task each), in the order first seen."""
    by_task: dict[str, list[TrialResult]] = {}
    for trial in trials:
        if trial.status == "ok" and trial.matrix and trial.task_names:
            by_task.setdefault(trial.task_names[0], []).append(trial)
    result = []
    for task, members in by_task.items():
        members.sort(key=lambda t: t.seed)
        randoms = [t.random_row[0] for t in members if t.random_row]
        result.append(
            Reference(
                task=task,
                returns=[float(t.matrix[-1][0]) for t in members],
                seeds=[t.seed for t in members],
                random=float(np.mean(randoms)) if randoms else math.nan,
                along=[_curve_mean(members, f) for f in CURVE_FRACTIONS],
            )
        )
    return result


def _curve_mean(trials: Sequence[TrialResult], fraction: float) -> float:
    """Mean over the trials of the evaluation nearest ``fraction`` of the trial's env steps."""
    values = []
    for trial in trials:
        points = [p for p in trial.curve if p.get("returns")]
        if not points:
            continue
        last = max(p["env_steps"] for p in points)
        nearest = min(points, key=lambda p: abs(p["env_steps"] - fraction * last))
        values.append(float(nearest["returns"][0]))
    return float(np.mean(values)) if values else math.nan


def references_yaml(rows: Sequence[Reference], *, title: str) -> str:
    """The file ``blip-ray report --reference-returns`` reads: task -> mean reference return,
    each line commented with its seeds and the random policy's return."""
    lines = [
        f"# Single-task reference returns of {title}: PPO on each task alone, raw evaluation",
        "# return after the budget, mean over seeds. Use with:",
        f"#   blip-ray report RUN_DIR --reference-returns {REFERENCE_FILE}",
    ]
    for row in rows:
        seeds = ", ".join(f"{s}: {v:.3f}" for s, v in zip(row.seeds, row.returns, strict=True))
        lines.append(f"{row.task}: {row.mean!r}  # seeds {{{seeds}}}; random {row.random:.3f}")
    return "\n".join(lines) + "\n"


def references_table(rows: Sequence[Reference]) -> str:
    """Markdown: each task's reference (mean ± 95% CI), its ratio to the random policy, and the
    mean return at fractions of the budget."""
    along = [f"at {f:.0%} of the budget" for f in CURVE_FRACTIONS]
    header = ["Task", "Reference return", "Random policy", "x random", *along, "Seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        mean, half = metrics.ci95(row.returns)
        spread = f" ± {half:.2f}" if len(row.returns) > 1 else " (n=1)"
        ratio = row.mean / row.random if row.random > 0 else math.nan
        cells = [
            row.task,
            f"{mean:.2f}{spread}",
            f"{row.random:.2f}",
            "n/a" if math.isnan(ratio) else f"{ratio:.1f}",
            *("n/a" if math.isnan(v) else f"{v:.2f}" for v in row.along),
            ", ".join(map(str, row.seeds)),
        ]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def write_references(
    trials: Sequence[TrialResult],
    out_dir: Path,
    *,
    title: str,
    wall_s: float | None = None,
    planned: int | None = None,
) -> str:
    """Write ``reference_returns.yaml`` and ``report.md`` into ``out_dir``; return the table."""
    rows = references(trials)
    table = references_table(rows)
    out_dir = Path(out_dir)
    if rows:
        (out_dir / REFERENCE_FILE).write_text(references_yaml(rows, title=title))
    ok = sum(t.status == "ok" for t in trials)
    lines = [f"# {title}: single-task references", ""]
    if wall_s is not None:
        lines.append(f"Wall time: {wall_s:.1f} s.")
    lines += [
        f"Trials: {ok} ok of {planned if planned is not None else len(trials)} planned.",
        "",
        table,
        "",
        "PPO trained on each task alone with the sequence's network and budget; reference "
        "return: raw evaluation return after the budget, mean ± 95% confidence half-width over "
        "seeds; random policy: a uniformly random policy on the same evaluation episodes. "
        f"The means are in {REFERENCE_FILE}, for `blip-ray report RUN_DIR --reference-returns "
        f"{REFERENCE_FILE}`."
        if rows
        else "No trial finished: no reference returns written.",
    ]
    failed = [t for t in trials if t.status != "ok"]
    if failed:
        lines += ["", "## Trials not ok", ""]
        lines += [f"- {t.trial_id} seed {t.seed} ({t.status}): {t.error}" for t in failed]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table
