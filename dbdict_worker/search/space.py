"""The search space file (TOML, or JSON) -> Optuna distributions.

Each top-level key is a parameter:

- a table with ``type``: ``float`` (``low``, ``high``, optional ``log``, ``step``), ``uniform``,
  ``loguniform``, ``int`` (``low``, ``high``, optional ``step``, ``log``) or ``categorical``
  (``choices``);
- a list: a categorical over its values;
- a table without ``type``: a conditional categorical, in the ``--sweep`` file's style: its
  keys are the choices, each maps to a table of parameters sampled only with that choice;
- anything else: a fixed parameter, put in every trial's state.

Optuna's names of the parameters of a choice are ``factor[choice].key`` so that a key that
appears under two choices with two ranges stays two distributions; the job's state has the
plain key.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dbdict_worker import state as statemod
from dbdict_worker.errors import UsageError
from dbdict_worker.search.optuna_import import optuna

TYPES = ("float", "uniform", "loguniform", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One sampled parameter: Optuna's name, the state key, its distribution."""

    name: str
    key: str
    dist: Any


@dataclass(frozen=True)
class Choice:
    """A conditional categorical: each choice has its own sub-space."""

    name: str
    key: str
    options: tuple[tuple[Any, "Space"], ...]


@dataclass(frozen=True)
class Space:
    """A parsed space: the sampled nodes in file order, and the fixed parameters."""

    nodes: tuple[Param | Choice, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def sample(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` (an optuna.Trial) for a point; the job's flat state (+ fixed)."""
        out = dict(self.fixed)
        for node in self.nodes:
            if isinstance(node, Param):
                out[node.key] = _suggest(trial, node.name, node.dist)
            else:
                value = trial.suggest_categorical(node.name, [v for v, _ in node.options])
                out[node.key] = value
                out.update(dict(node.options)[value].sample(trial))
        return out

    def from_state(self, st: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optuna's (params, distributions) of a trial whose job has state ``st`` (a
        restarted driver rebuilds its study from them); parameters missing from the state, or
        no longer in range, are left out."""
        params: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        for node in self.nodes:
            if node.key not in st:
                continue
            value = st[node.key]
            if isinstance(node, Param):
                dist = node.dist
            else:
                dist = optuna.distributions.CategoricalDistribution([v for v, _ in node.options])
            try:
                if not dist._contains(dist.to_internal_repr(value)):
                    continue
            except (ValueError, TypeError):
                continue
            params[node.name], dists[node.name] = value, dist
            if isinstance(node, Choice):
                p, d = dict(node.options)[value].from_state(st)
                params.update(p)
                dists.update(d)
        return params, dists

    def params_in(self, st: Mapping[str, Any]) -> dict[str, Any]:
        """The searched and fixed parameters in a trial's state (not its results)."""
        out = {k: st[k] for k in self.fixed if k in st}
        for node in self.nodes:
            if node.key in st:
                out[node.key] = st[node.key]
                if isinstance(node, Choice) and st[node.key] in dict(node.options):
                    out.update(dict(node.options)[st[node.key]].params_in(st))
        return out

    def is_conditional(self) -> bool:
        return any(isinstance(n, Choice) for n in self.nodes)

    def grid(self) -> dict[str, list[Any]]:
        """The GridSampler's search space (ints, stepped floats and categoricals only)."""
        if self.is_conditional():
            raise UsageError("the grid sampler needs a space without conditional parameters "
                             "(use dbdict-enqueue --sweep for a full grid)")
        out: dict[str, list[Any]] = {}
        for node in self.nodes:
            d = node.dist
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                out[node.name] = list(d.choices)
            elif d.step is not None and not d.log:
                n = int(round((d.high - d.low) / d.step)) + 1
                out[node.name] = [d.low + i * d.step for i in range(n)]
                if isinstance(d, optuna.distributions.IntDistribution):
                    out[node.name] = [int(v) for v in out[node.name]]
            else:
                raise UsageError(f"the grid sampler needs ints, stepped floats or categoricals: "
                                 f"{node.key!r} is a continuous {type(d).__name__}")
        return out


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    d = optuna.distributions
    if isinstance(dist, d.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, list(dist.choices))


def load_space(path: str | os.PathLike) -> tuple[Space, dict[str, Any]]:
    """Read a space file: (the Space, its raw data as parsed, which the search stores)."""
    from dbdict_worker.sweeps import _parse_sweep_text, read_utf8

    text = read_utf8(path, "space file")
    data = _parse_sweep_text(Path(path), text)
    try:
        json.dumps(data)  # stored as JSON: TOML dates, for one, are refused here
    except TypeError as e:
        raise UsageError(f"space file {os.fspath(path)!r}: {e}") from None
    try:
        return parse_space(data), data
    except UsageError as e:
        raise UsageError(f"space file {os.fspath(path)!r}: "
                         f"{str(e).replace('cannot parse sweep file', 'cannot parse')}") from None


def parse_space(data: Any, prefix: str = "") -> Space:
    """A Space from the parsed file (UsageError names the bad parameter)."""
    if not isinstance(data, Mapping):
        raise UsageError(f"the top level must be a table of parameters, not {type(data).__name__}")
    nodes: list[Param | Choice] = []
    fixed: dict[str, Any] = {}
    for key, spec in data.items():
        statemod.check_key(str(key))
        name = f"{prefix}{key}"
        if isinstance(spec, Mapping) and "type" in spec:
            nodes.append(Param(name, key, _distribution(key, spec)))
        elif isinstance(spec, list):
            nodes.append(Param(name, key, _categorical(key, spec)))
        elif isinstance(spec, Mapping):
            if not spec:
                raise UsageError(f"parameter {key!r} = {{}} has no choices")
            options = []
            for text, sub in spec.items():
                if not isinstance(sub, Mapping):
                    raise UsageError(f"parameter {key!r}: choice {text!r} must map to a table of "
                                     f"parameters ({{}} for none), not {type(sub).__name__} "
                                     "(a parameter's settings need type = ...)")
                value = statemod.parse_value(text)
                options.append((value, parse_space(sub, f"{name}[{text}].")))
            _categorical(key, [v for v, _ in options])
            nodes.append(Choice(name, key, tuple(options)))
        else:
            fixed[key] = statemod.check_value(key, spec)
    if not nodes and not prefix:
        raise UsageError("no parameter to search (only fixed ones)")
    return Space(tuple(nodes), fixed)


def _categorical(key: str, choices: list) -> Any:
    if not choices:
        raise UsageError(f"parameter {key!r}: empty choices")
    for c in choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            raise UsageError(f"parameter {key!r}: choice {c!r} must be a string, number or "
                             "boolean")
    if len({json.dumps(c) for c in choices}) != len(choices):
        raise UsageError(f"parameter {key!r}: repeated choices {choices!r}")
    return optuna.distributions.CategoricalDistribution(choices)


def _distribution(key: str, spec: Mapping[str, Any]) -> Any:
    kind = spec["type"]
    allowed = {"type", "low", "high", "log", "step", "choices"}
    unknown = set(spec) - allowed
    if kind not in TYPES:
        raise UsageError(f"parameter {key!r}: unknown type {kind!r} (one of {', '.join(TYPES)})")
    if unknown:
        raise UsageError(f"parameter {key!r}: unknown setting {sorted(unknown)[0]!r} "
                         f"(known: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list):
            raise UsageError(f"parameter {key!r}: a categorical needs choices = [...]")
        return _categorical(key, choices)
    for bound in ("low", "high"):
        v = spec.get(bound)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UsageError(f"parameter {key!r}: {bound} must be a finite number, got {v!r}")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", kind == "loguniform")
    step = spec.get("step")
    if not isinstance(log, bool):
        raise UsageError(f"parameter {key!r}: log must be true or false")
    if low >= high:
        raise UsageError(f"parameter {key!r}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise UsageError(f"parameter {key!r}: a log scale needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise UsageError(f"parameter {key!r}: step must be a number > 0, got {step!r}")
        if log:
            raise UsageError(f"parameter {key!r}: step and log cannot be used together")
    try:
        if kind == "int":
            if not all(float(v).is_integer() for v in (low, high, step or 1)):
                raise UsageError(f"parameter {key!r}: an int needs integer low, high and step")
            return optuna.distributions.IntDistribution(int(low), int(high), log=log,
                                                        step=int(step or 1))
        return optuna.distributions.FloatDistribution(float(low), float(high), log=log,
                                                      step=float(step) if step else None)
    except ValueError as e:
        raise UsageError(f"parameter {key!r}: {e}") from None
