"""The driver's in-memory Optuna study: its sampler and pruner, and its rebuilding from the
search's jobs (a restarted driver continues from the database, not from a file of its own).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

from dbdict_worker.constants import Status
from dbdict_worker.db.search import TrialRow
from dbdict_worker.errors import UsageError
from dbdict_worker.search import PRUNERS, SAMPLERS  # noqa: F401 (the driver reads them here)
from dbdict_worker.search.optuna_import import optuna
from dbdict_worker.search.space import Space

TrialState = optuna.trial.TrialState


def make_sampler(name: str, space: Space, seed: int | None) -> Any:
    """The Optuna sampler called ``name``."""
    s = optuna.samplers
    if name == "tpe":
        # constant_liar: trials still running count as (pessimistic) results, so that
        # parallel workers are not all handed the same promising point. multivariate and
        # group (for conditional spaces) are "experimental" to Optuna, which says so on each
        # use: a warning a user can do nothing about.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return s.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return _GridSampler(space.grid(), seed=seed)
    if name == "qmc":
        return s.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise UsageError(f"unknown sampler {name!r} (one of {', '.join(SAMPLERS)})")


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its study.stop() after the last point, which only
    works inside study.optimize (the driver's budget is capped at the grid's size)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def make_pruner(name: str) -> Any:
    """The Optuna pruner called ``name`` (``asha``: successive halving)."""
    p = optuna.pruners
    if name == "none":
        return p.NopPruner()
    if name == "median":
        return p.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "asha":
        return p.SuccessiveHalvingPruner()
    if name == "hyperband":
        return p.HyperbandPruner()
    raise UsageError(f"unknown pruner {name!r} (one of {', '.join(PRUNERS)})")


def grid_size(space: Space) -> int:
    """How many points the grid sampler has."""
    n = 1
    for values in space.grid().values():
        n *= len(values)
    return n


def objective_value(state: Mapping[str, Any], key: str) -> float | None:
    """The objective in a DONE job's state, or None (missing, not a number, NaN)."""
    v = state.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def outcome(row: TrialRow, objective: str,
            intermediate: Mapping[int, float]) -> tuple[Any, float | None]:
    """What to tell the sampler of a finished trial: (TrialState, value). DONE with the
    objective: COMPLETE; PRUNED: PRUNED with its last intermediate value; else FAIL."""
    if row.status == Status.DONE:
        value = objective_value(row.state, objective)
        return (TrialState.COMPLETE, value) if value is not None else (TrialState.FAIL, None)
    if row.status == Status.PRUNED:
        last = intermediate[max(intermediate)] if intermediate else None
        return TrialState.PRUNED, last
    return TrialState.FAIL, None


def is_pending(status: Status) -> bool:
    """START and RUNNING trials are pending (lost and requeued ones included)."""
    return status in (Status.START, Status.RUNNING)


class StudyMirror:
    """An in-memory study whose trial numbers are the search's trial numbers."""

    def __init__(self, name: str, space: Space, sampler: Any, pruner: Any,
                 direction: str) -> None:
        self.space = space
        self.storage = optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(storage=self.storage, sampler=sampler, pruner=pruner,
                                         direction=direction, study_name=name)
        self.study_id = self.storage.get_study_id_from_name(name)
        self._grid_used: set[int] = set()

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def add(self, row: TrialRow, objective: str, intermediate: Mapping[int, float]) -> None:
        """Add a trial read from the database (finished or pending), as trial row.trial."""
        params, dists = self.space.from_state(row.state)
        if is_pending(row.status):
            state, value = TrialState.RUNNING, None
        else:
            state, value = outcome(row, objective, intermediate)
        frozen = optuna.trial.create_trial(
            state=state, value=value if state != TrialState.FAIL else None,
            params=params, distributions=dists, system_attrs=self._grid_attrs(params),
            intermediate_values=dict(intermediate))
        self.study.add_trial(frozen)  # a pruned one keeps its last value, as tell gives it

    def _grid_attrs(self, params: Mapping[str, Any]) -> dict[str, Any]:
        # GridSampler knows the points taken by its system attributes: give a rebuilt trial
        # the grid id of its parameters, so a restarted driver does not run them again.
        sampler = self.study.sampler
        if not isinstance(sampler, optuna.samplers.GridSampler):
            return {}
        point = tuple(params.get(n) for n in sampler._param_names)
        for i, grid in enumerate(sampler._all_grids):
            if i not in self._grid_used and tuple(grid) == point:
                self._grid_used.add(i)
                return {"search_space": sampler._search_space, "grid_id": i}
        return {}

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial: (its number, the job's flat state)."""
        trial = self.study.ask()
        return trial.number, self.space.sample(trial)

    def set_intermediate(self, number: int, values: Mapping[int, float]) -> bool:
        """Bring a running trial's intermediate values up to date; whether any changed."""
        tid = self.trial_id(number)
        have = self.storage.get_trial(tid).intermediate_values
        changed = False
        for step, value in values.items():
            if have.get(step) != value:
                self.storage.set_trial_intermediate_value(tid, step, value)
                changed = True
        return changed

    def should_prune(self, number: int, values: Mapping[int, float]) -> bool:
        """Bring a running trial's intermediate values up to date, one new step at a time,
        asking the pruner after each as if the trial had reported it alone (the steps arrive
        in batches: judged at its latest step only, a trial read late would be compared
        with values from further down its curve than the others')."""
        tid = self.trial_id(number)
        have = self.storage.get_trial(tid).intermediate_values
        last = max(have) if have else -1
        for step in sorted(values):
            if step <= last:
                if have.get(step) != values[step]:  # a later attempt's value wins
                    self.storage.set_trial_intermediate_value(tid, step, values[step])
                continue
            self.storage.set_trial_intermediate_value(tid, step, values[step])
            if self.study.pruner.prune(self.study, self.storage.get_trial(tid)):
                return True
        return False

    def tell(self, row: TrialRow, objective: str, intermediate: Mapping[int, float]) -> Any:
        """Tell a finished trial; its TrialState."""
        self.set_intermediate(row.trial, intermediate)
        state, value = outcome(row, objective, intermediate)
        if state == TrialState.COMPLETE:
            self.study.tell(row.trial, value, skip_if_finished=True)
        else:
            self.study.tell(row.trial, state=state, skip_if_finished=True)
        return state
