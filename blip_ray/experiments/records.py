"""What one trial produced, in a form independent of Ray and of the track (supervised or RL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialResult:
    """One continual run: a method with its hyperparameters and a seed over a task sequence."""

    trial_id: str
    method: str
    seed: int
    hyperparameters: dict[str, Any]
    """The method's hyperparameters as run (searched ones resolved to their sampled values)."""
    status: str
    """``ok`` (all tasks finished), ``failed`` (ended with an error) or ``incomplete``."""
    error: str | None = None
    """One line: why the trial failed."""
    task_names: list[str] = field(default_factory=list)
    matrix: list[list[float]] = field(default_factory=list)
    """Finished rows of R: R[t][u] = accuracy (or normalized return) on task u after task t."""
    initial_row: list[float] | None = None
    """The untrained network's value per task (forward-transfer baseline); None if unknown."""
    capacity: list[float | None] = field(default_factory=list)
    """BLIP capacity used after each finished task (None for methods without bits)."""
    state_bytes: list[int] = field(default_factory=list)
    """Bytes of method state kept after each finished task."""
    metric: str = "accuracy"
    """What R holds: ``accuracy`` or ``normalized_return``."""
    wall_s: float = 0.0
    """Wall time of the trial's finished tasks, summed."""
    raw_matrix: list[list[float]] | None = None
    """RL: the raw game scores behind a normalized ``matrix``."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """RL learning curves: ``{"env_steps": n, "returns": [raw return per task]}`` evaluations."""
    random_row: list[float] | None = None
    """RL: a uniformly random policy's raw return per task (0 of the normalization)."""
    reference: dict[str, float] = field(default_factory=dict)
    """RL: the spec's single-task reference return per task name (1 of the normalization)."""
    budget: dict[str, Any] | None = None
    """RL: env steps per task and the evaluation protocol (episodes, step cap) the trial ran."""
    normalization: list[dict[str, Any]] | None = None
    """RL, set by the report's normalization: per task its name, ``low`` (raw return mapped to 0)
    and its ``low_source`` (``random policy``, or ``untrained policy`` for older results),
    ``high`` (mapped to 1) and its ``source`` (``reference`` or ``best observed``)."""
