"""Continual-learning metrics over an accuracy (or return) matrix; pure numpy, no Ray, no torch.

Every method is scored by these functions and nothing else (FACIL's rule: metrics live outside the
methods), so one formula serves the supervised and the RL track.

Convention. ``R[t, u]`` is the accuracy (or return) on task ``u`` after training task ``t``, with
0-based indices. Every task is evaluated after every training task, so the upper triangle holds
zero-shot values on tasks not trained yet; that is what makes forward transfer measurable.

Partial runs ("running metrics"). ``R`` may hold only the ``k <= T`` rows finished so far, shape
``(k, T)``. Every metric then treats the run as a ``k``-task run: it reads only the leading
``k x k`` block ``R[:k, :k]``, so the metrics after ``k`` rows equal those of a finished ``k``-task
run. In particular, after ``k`` rows, ACC = mean of ``R[k-1, :k]``, BWT is taken over tasks
``0..k-1``, and FWT uses ``R[i-1, i]`` for ``1 <= i <= k-1`` (the zero-shot value on the next,
not yet trained task, ``R[k-1, k]``, enters once that task has been trained). Which entries each
metric reads is stated below; entries it does not read may hold anything, NaN included. A NaN in
an entry that is read propagates into the result.

Undefined values. A one-task run has nothing to forget and no task to transfer forward to:
``bwt_gem``, ``forgetting`` and ``fwt`` divide by ``T - 1`` and return NaN for ``T == 1`` (not
0.0, which would read as a measured "no forgetting" and bias means over seeds), while the official
``bwt`` divides by ``T`` and is 0.0 by its formula. pandas skips NaN when averaging, so tables
stay numeric wherever the value is defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Metric:
    """One matrix metric. :func:`summary`, summary.csv and the report's table read :data:`METRICS`,
    so a new metric is one entry there. ``fn(R)``, or ``fn(R, baseline)`` if ``needs_baseline``:
    then NaN without a baseline (no reference measured), not 0.0."""

    key: str
    label: str
    fn: Callable[..., float]
    needs_baseline: bool = False
    higher_is_better: bool = True
    """Which way is better, so a table can mark the best method: up for ACC, BWT and FWT (a
    negative BWT is forgetting), down for forgetting."""

    def __call__(self, R: ArrayLike, baseline: ArrayLike | None = None) -> float:
        if not self.needs_baseline:
            return self.fn(R)
        return math.nan if baseline is None else self.fn(R, baseline)


def _as_matrix(R: ArrayLike) -> np.ndarray:
    """``R`` as a float array of shape ``(k, T)`` with ``1 <= k <= T``; ValueError otherwise."""
    matrix = np.asarray(R, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(
            f"accuracy matrix must be 2-D with shape (k, T), k finished rows of T tasks; "
            f"got shape {matrix.shape}"
        )
    rows, tasks = matrix.shape
    if rows < 1 or tasks < 1:
        raise ValueError(f"accuracy matrix needs at least one row and one task; got {matrix.shape}")
    if rows > tasks:
        raise ValueError(
            f"accuracy matrix has {rows} rows but only {tasks} task columns; rows are "
            f"'after training task t', so there can be at most one per task (shape (k, T), k <= T)"
        )
    return matrix


def _as_task_vector(values: ArrayLike, *, tasks: int, name: str) -> np.ndarray:
    """``values`` as a float vector with one entry per task column; ValueError otherwise."""
    vector = np.asarray(values, dtype=float)
    if vector.shape != (tasks,):
        raise ValueError(
            f"{name} must hold one value per task, shape ({tasks},); got shape {vector.shape}"
        )
    return vector


def _seen(R: ArrayLike) -> np.ndarray:
    """The leading ``k x k`` block of the ``k`` finished rows: the tasks seen so far."""
    matrix = _as_matrix(R)
    rows = matrix.shape[0]
    return matrix[:, :rows]


def acc(R: ArrayLike) -> float:
    """Average accuracy: ``ACC = (1/T) sum_i R[T-1, i]``, the mean of the last row.

    The official BLIP code's ``mean(acc[T-1, :])``. After ``k`` rows: mean of ``R[k-1, :k]``.
    Reads the last finished row only.
    """
    return float(acc_terms(R).mean())


def acc_terms(R: ArrayLike) -> np.ndarray:
    """ACC's per-task terms ``R[T-1, i]``, one per task seen: their mean is :func:`acc`."""
    return _seen(R)[-1].copy()


def bwt(R: ArrayLike) -> float:
    """Backward transfer, official/UCB form: ``(1/T) sum_{i<T} (R[T-1, i] - R[i, i])``.

    BLIP's and UCB's code divide by ``T`` and so include the last task's zero term; this is the
    form the paper's tables use (PAPER_NOTES section 1). Negative means forgetting. ``T == 1``
    gives 0.0. After ``k`` rows: the same over tasks ``0..k-1``. Reads the diagonal and the last
    finished row.
    """
    return float(bwt_terms(R).mean())


def bwt_terms(R: ArrayLike) -> np.ndarray:
    """BWT's per-task terms ``R[T-1, i] - R[i, i]``, one per task seen (the last one 0): their
    mean is :func:`bwt`."""
    seen = _seen(R)
    return seen[-1] - np.diag(seen)


def bwt_gem(R: ArrayLike) -> float:
    """Backward transfer, GEM form: ``(1/(T-1)) sum_{i<T-1} (R[T-1, i] - R[i, i])``.

    Lopez-Paz & Ranzato (2017), eq. 3; it averages over the tasks that can have changed only.
    Relation: ``bwt = bwt_gem * (T-1)/T``. NaN for ``T == 1`` (no earlier task exists).
    """
    seen = _seen(R)
    tasks = seen.shape[0]
    if tasks == 1:
        return math.nan
    return float((seen[-1, :-1] - np.diag(seen)[:-1]).sum() / (tasks - 1))


def forgetting(R: ArrayLike) -> float:
    """Average forgetting: mean over ``u < T-1`` of ``max_{u <= t < T-1} R[t, u] - R[T-1, u]``.

    Chaudhry et al. (2018, RWalk): the drop from each earlier task's best accuracy to its final
    one. The maximum starts at ``t = u`` because a task cannot be forgotten before it is learned:
    zero-shot values ``R[t, u]`` with ``t < u`` are ignored, however high. Not clipped at zero, so
    a task that ends above its best earlier value contributes a negative term. NaN for ``T == 1``
    (no earlier task). Reads the lower triangle and the diagonal.
    """
    terms = forgetting_terms(R)
    return float(terms.mean()) if terms.size else math.nan


def forgetting_terms(R: ArrayLike) -> np.ndarray:
    """Forgetting's per-task terms, one per task before the last (none for ``T == 1``): their
    mean is :func:`forgetting`."""
    seen = _seen(R)
    tasks = seen.shape[0]
    if tasks == 1:
        return np.empty(0)
    earlier = seen[:-1, :-1]
    # Mask the upper triangle (t < u) with -inf so the column maximum sees only t >= u.
    learned = np.where(np.tri(tasks - 1, dtype=bool), earlier, -np.inf)
    return learned.max(axis=0) - seen[-1, :-1]


def fwt(R: ArrayLike, baseline: ArrayLike) -> float:
    """Forward transfer: ``(1/(T-1)) sum_{i>=1} (R[i-1, i] - baseline[i])``.

    Lopez-Paz & Ranzato (2017), eq. 4: how much training tasks ``0..i-1`` helps task ``i``
    before it is trained, against ``baseline[i]``, the accuracy of a freshly (randomly)
    initialised model on task ``i``. ``baseline`` has one entry per task column (length ``T`` of
    the shape ``(k, T)``); ``baseline[0]`` is never used. NaN for ``T == 1``. After ``k`` rows:
    ``i`` runs over ``1..k-1``. Reads the superdiagonal.
    """
    matrix = _as_matrix(R)
    base = _as_task_vector(baseline, tasks=matrix.shape[1], name="baseline")
    tasks = matrix.shape[0]
    if tasks == 1:
        return math.nan
    zero_shot = np.diag(matrix, k=1)[: tasks - 1]
    return float((zero_shot - base[1:tasks]).mean())


METRICS: tuple[Metric, ...] = (
    Metric("acc", "ACC", acc),
    Metric("bwt", "BWT (1/T, official)", bwt),
    Metric("bwt_gem", "BWT (1/(T-1), GEM)", bwt_gem),
    Metric("forgetting", "Forgetting", forgetting, higher_is_better=False),
    Metric("fwt", "FWT", fwt, needs_baseline=True),
)
"""Every matrix metric, in table order."""
METRIC_NAMES: tuple[str, ...] = tuple(metric.key for metric in METRICS)
"""Keys of :func:`summary`, in table order."""
TASK_TERMS: dict[str, Callable[[ArrayLike], np.ndarray]] = {
    "acc": acc_terms,
    "bwt": bwt_terms,
    "forgetting": forgetting_terms,
}
"""The metrics that are a mean of one term per task, with that term: what the RL report's
bootstrap resamples game by game (a stratum per game)."""


#: Relative span under which a normalization scale counts as none (float32's precision is 6e-8).
SCALE_TOLERANCE = 1e-6


def normalize_returns(R: ArrayLike, low: ArrayLike, high: ArrayLike) -> np.ndarray:
    """Per-game normalised returns ``(R[:, u] - low[u]) / (high[u] - low[u])`` for RL.

    Raw Atari scores differ by orders of magnitude between games, so they are mapped to a common
    scale before averaging (as CleanRL and the human-normalised-score literature do): 0 is
    ``low`` (a random policy's return), 1 is ``high`` (a reference, e.g. the best single-task
    return). ``low`` and ``high`` hold one value per task column. A column with
    ``high == low`` has no usable scale: it becomes NaN, without a division warning, so the defect
    shows in tables instead of an invented number. ``high < low`` raises ValueError (swapped
    arguments). Accepts partial rows; returns an array of ``R``'s shape.
    """
    matrix = _as_matrix(R)
    tasks = matrix.shape[1]
    low_v = _as_task_vector(low, tasks=tasks, name="low")
    high_v = _as_task_vector(high, tasks=tasks, name="high")
    span = high_v - low_v
    if np.any(span < 0):
        bad = np.flatnonzero(span < 0).tolist()
        raise ValueError(f"high must be >= low for every task; not so for task(s) {bad}")
    degenerate = span <= SCALE_TOLERANCE * np.maximum(
        1.0, np.maximum(np.abs(low_v), np.abs(high_v))
    )
    scaled = (matrix - low_v) / np.where(degenerate, 1.0, span)
    return np.where(degenerate, np.nan, scaled)


def summary(R: ArrayLike, baseline: ArrayLike | None = None) -> dict[str, float]:
    """Every metric of :data:`METRICS` on one (possibly partial) run, keyed and ordered as there;
    ``fwt`` is NaN without a ``baseline`` (forward transfer needs a reference)."""
    return {metric.key: metric(R, baseline) for metric in METRICS}


def ci95(values: ArrayLike) -> tuple[float, float]:
    """Mean and 95% confidence half-width over seeds: ``t_{0.975, n-1} * s / sqrt(n)``.

    Student-t interval with the sample standard deviation ``s`` (ddof 1), the right interval for
    a handful of seeds where the normal quantile 1.96 would be too narrow. One value gives a NaN
    half-width (no spread can be estimated from one seed; 0.0 would claim certainty). NaN values
    propagate: a seed with an undefined metric makes the result NaN rather than being dropped
    silently. Raises ValueError for an empty or non-1-D input.
    """
    sample = np.asarray(values, dtype=float)
    if sample.ndim != 1 or sample.size == 0:
        raise ValueError(f"ci95 needs a non-empty 1-D sequence of values; got shape {sample.shape}")
    count = sample.size
    mean = float(sample.mean())
    if count == 1:
        return mean, math.nan
    # Imported here: scipy.stats is slow to import and only the report needs intervals.
    from scipy import stats

    quantile = float(stats.t.ppf(0.975, df=count - 1))
    return mean, quantile * float(sample.std(ddof=1)) / math.sqrt(count)
