"""Optuna, or a one-line error naming the extra that brings it."""
from __future__ import annotations

import warnings

from dbdict_worker.errors import UsageError

try:
    import optuna
except ModuleNotFoundError:  # pragma: no cover - the extra is installed in the tests
    raise UsageError("dbdict search needs Optuna: pip install 'dbdict-worker[search]'") from None

# Optuna logs every trial at INFO and flags constant_liar/multivariate as experimental; the
# driver prints its own progress.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = ["optuna"]
