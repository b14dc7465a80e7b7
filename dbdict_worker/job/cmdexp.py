"""Command experiments: jobs that run any program instead of a Python function.

``dbdict-enqueue --cmd 'python train.py --lr {lr} --out {workdir}' 'lr={{0.1,0.01}}'`` stores
the experiment as ``cmd:`` followed by the JSON list of the argv template (split with shlex at
enqueue time). Each ``{key}`` in an argument is filled from the job's state with
``str.format`` rules (``{lr:.3g}`` works), looked up as the whole dotted key (``{model.size}``):
no attribute or item access ever happens. Extra placeholders: ``{workdir}``, ``{tempdir}``,
``{state_file}``. The program runs without a shell; ``--shell`` stores ``shell:`` + the JSON
string instead, runs it with ``/bin/sh -c`` and quotes every substituted value for the shell.

At run time the program (cwd = the workdir, in the job's process group, so it gets the same
SIGTERM) sees the state as ``state.json`` (flat dotted keys) and as environment variables
(:func:`env_name`). Exit 0 is COMPLETE, 75 (EX_TEMPFAIL) INCOMPLETE, anything else ERR_RUN.
Values it writes to ``state.json`` come back into the state (polled while it runs, read at the
end); they must be storable values (:func:`dbdict_worker.state.check_value`). Lines it
appends to ``$DBDICT_METRICS_FILE`` are its ``channel.report`` (:mod:`.cmdreports`).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dbdict_worker import state as statemod
from dbdict_worker.constants import EXIT_INCOMPLETE, Status
from dbdict_worker.errors import DbdictError, UsageError
from dbdict_worker.job.childenv import describe_returncode
from dbdict_worker.job.cmdreports import METRICS_FILE, METRICS_FILE_ENV, ReportFile

CMD_PREFIX = "cmd:"
SHELL_PREFIX = "shell:"
STATE_FILE = "state.json"
#: Placeholders filled from the run rather than from the parameters.
EXTRAS = ("workdir", "tempdir", "state_file")
PARAM_ENV_PREFIX = "DBDICT_P_"
JOB_ENV_PREFIX = "DBDICT_JOB_"
STATE_FILE_ENV = "DBDICT_STATE_FILE"
SHELL = "/bin/sh"


class CommandError(DbdictError):
    """A command experiment's template or state.json is unusable."""


def is_command(experiment: str) -> bool:
    """True if the experiment column holds a command rather than a dotted path."""
    return experiment.startswith((CMD_PREFIX, SHELL_PREFIX))


class _Formatter(string.Formatter):
    """str.format that looks up each field as one whole key: no ``.attr`` or ``[item]``
    traversal, so a template can never reach an object's internals."""

    def __init__(self, quote: bool = False) -> None:
        super().__init__()
        self.quote = quote

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        return kwargs[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        text = super().format_field(value, format_spec)
        return shlex.quote(text) if self.quote else text


@dataclass(frozen=True)
class CommandTemplate:
    """An argv template (or, with ``shell``, one shell command template)."""

    argv: tuple[str, ...]
    shell: bool = False

    @classmethod
    def from_text(cls, text: str, *, shell: bool = False) -> "CommandTemplate":
        """Parse what the user typed after ``--cmd`` (UsageError if it is empty or malformed)."""
        if shell:
            if not text.strip():
                raise UsageError("--cmd: empty command")
            template = cls((text,), shell=True)
        else:
            try:
                argv = tuple(shlex.split(text))
            except ValueError as e:
                raise UsageError(f"--cmd {text!r}: {e}") from None
            if not argv:
                raise UsageError("--cmd: empty command")
            template = cls(argv)
        template.fields()  # syntax check
        return template

    @classmethod
    def decode(cls, experiment: str) -> "CommandTemplate":
        """The template stored in an experiment column (CommandError if malformed)."""
        try:
            if experiment.startswith(CMD_PREFIX):
                argv = json.loads(experiment[len(CMD_PREFIX):])
                if (isinstance(argv, list) and argv
                        and all(isinstance(a, str) for a in argv)):
                    return cls(tuple(argv))
            elif experiment.startswith(SHELL_PREFIX):
                text = json.loads(experiment[len(SHELL_PREFIX):])
                if isinstance(text, str) and text.strip():
                    return cls((text,), shell=True)
        except ValueError:
            pass
        raise CommandError(f"malformed command experiment {experiment!r}")

    def encode(self) -> str:
        """The experiment column's text (``cmd:[...]`` or ``shell:"..."``)."""
        if self.shell:
            return SHELL_PREFIX + json.dumps(self.argv[0], ensure_ascii=False)
        return CMD_PREFIX + json.dumps(list(self.argv), ensure_ascii=False,
                                       separators=(",", ":"))

    def __str__(self) -> str:
        return self.argv[0] if self.shell else shlex.join(self.argv)

    def fields(self) -> list[str]:
        """The placeholder names, in order (UsageError on bad template syntax)."""
        names: list[str] = []
        for arg in self.argv:
            try:
                parsed = list(string.Formatter().parse(arg))
            except ValueError as e:
                raise UsageError(f"command template {arg!r}: {e} (write {{{{ and }}}} for "
                                 f"literal braces)") from None
            for _, name, _, _ in parsed:
                if name is None:
                    continue
                if not name or name.isdigit():
                    raise UsageError(f"command template {arg!r}: use named placeholders "
                                     f"like {{lr}}, not {{{name}}}")
                if name not in names:
                    names.append(name)
        return names

    def check(self, states: Iterable[Mapping[str, Any]]) -> None:
        """Refuse a template that names an unknown key or cannot format a value, for every
        state that will be enqueued (UsageError names the placeholder and the state)."""
        fields = self.fields()
        for flat in states:
            for name in EXTRAS:
                if name in flat:
                    raise UsageError(f"parameter {name!r} clashes with the {{{name}}} "
                                     f"placeholder of command experiments; rename it")
            missing = [f for f in fields if f not in flat and f not in EXTRAS]
            if missing:
                known = ", ".join(sorted(flat) + list(EXTRAS))
                raise UsageError(f"command template uses {{{missing[0]}}}, which is not a "
                                 f"parameter (known: {known})")
            try:
                self.render(flat, {name: name.upper() for name in EXTRAS})
            except (ValueError, TypeError) as e:
                shown = {f: flat[f] for f in fields if f in flat}
                raise UsageError(f"command template cannot format {shown}: {e}") from None

    def render(self, flat: Mapping[str, Any], extras: Mapping[str, str]) -> list[str]:
        """The argv to run (KeyError for a missing key, ValueError for a bad format spec)."""
        values = dict(flat)
        values.update(extras)
        if self.shell:
            return [SHELL, "-c", _Formatter(quote=True).vformat(self.argv[0], (), values)]
        formatter = _Formatter()
        return [formatter.vformat(arg, (), values) for arg in self.argv]


# --- state as files and environment -------------------------------------------------------

def env_name(key: str) -> str:
    """``lr`` -> ``DBDICT_P_LR``, ``model.n_hidden`` -> ``DBDICT_P_MODEL__N_HIDDEN``; reserved
    keys: ``dbdict.id`` -> ``DBDICT_JOB_ID``. Characters other than letters and digits
    become ``_`` (dots ``__``)."""
    _, dot, rest = key.partition(".")
    reserved = bool(dot) and statemod.is_reserved(key)  # ``dbdict.x``; a bare ``dbdict`` is not
    name = re.sub(r"[^A-Za-z0-9_]", "_", (rest if reserved else key).replace(".", "__")).upper()
    return (JOB_ENV_PREFIX if reserved else PARAM_ENV_PREFIX) + name


def env_value(value: Any) -> str:
    """Strings as themselves, everything else as JSON (``true``, ``null``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value, allow_nan=True)


def state_env(flat: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables for a state (on a name collision the first key, in sorted
    order, wins: state.json is the exact source)."""
    env: dict[str, str] = {}
    for key in sorted(flat):
        name = env_name(key)
        if name not in env:
            env[name] = env_value(flat[key])
    return env


def write_state_json(path: Path, flat: Mapping[str, Any]) -> None:
    """Write the flat state as JSON (atomically: the program may read it at any time)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({k: flat[k] for k in sorted(flat)}, f, indent=1, allow_nan=True,
                  ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def read_state_json(path: Path, previous: Mapping[str, Any]) -> dict[str, Any]:
    """``previous`` updated with the values in state.json (reserved keys ignored; a value
    equal to the previous one as JSON keeps the previous type, so tuples stay tuples).

    CommandError, naming the file and the key, if it is not a JSON object of storable values.
    """
    try:
        with open(path, encoding="utf-8") as f:
            loaded = json.load(f)
    except FileNotFoundError:
        raise CommandError(f"{STATE_FILE} was removed") from None
    except (OSError, ValueError) as e:
        raise CommandError(f"{STATE_FILE} is not valid JSON: {e}") from None
    if not isinstance(loaded, dict):
        raise CommandError(f"{STATE_FILE} must hold a JSON object, not "
                           f"{type(loaded).__name__}")
    try:
        flat = statemod.flatten(loaded)
    except DbdictError as e:
        raise CommandError(f"{STATE_FILE}: {e}") from None
    out = dict(previous)
    for key, value in flat.items():
        if statemod.is_reserved(key):
            continue
        old = previous.get(key, _MISSING)
        if old is not _MISSING and _same_json(old, value):
            continue
        out[key] = value
    try:
        statemod.flatten(out)  # a new key may conflict with an old one ('a' and 'a.b')
    except DbdictError as e:
        raise CommandError(f"{STATE_FILE}: {e}") from None
    return out


_MISSING = object()


def _same_json(a: Any, b: Any) -> bool:
    try:
        return statemod.canonical_json(a) == statemod.canonical_json(b)
    except (TypeError, ValueError):
        return False


# --- running (inside the job's child process) ----------------------------------------------

def run_command(template: CommandTemplate, user: dict[str, Any], reserved: Mapping[str, Any],
                *, workdir: Path, tempdir: str, poll: float, stop_requested: Callable[[], bool],
                on_started: Callable[[], None],
                on_save: Callable[[dict[str, Any]], None],
                report: Callable[..., None] | None = None) -> tuple[Status, str | None,
                                                                    dict[str, Any]]:
    """Run one command experiment to its end; returns (status, error, final user state).

    Called by the runner child, whose fds 1 and 2 the command inherits. ``on_save`` gets the
    new user state whenever the program rewrites state.json while it runs; ``report``
    (``channel.report``) each line it appends to ``$DBDICT_METRICS_FILE``.
    """
    state_path = workdir / STATE_FILE
    full = {**user, **reserved}
    write_state_json(state_path, full)
    extras = {"workdir": str(workdir), "tempdir": tempdir, "state_file": str(state_path)}
    try:
        argv = template.render(full, extras)
    except KeyError as e:
        return (Status.ERR_START, f"command template uses {{{e.args[0]}}}, which is not in "
                f"the state", user)
    except (ValueError, TypeError) as e:
        return Status.ERR_START, f"command template cannot be filled: {e}", user
    env = dict(os.environ)
    env.update(state_env(full))
    env[STATE_FILE_ENV] = str(state_path)
    env[METRICS_FILE_ENV] = str(workdir / METRICS_FILE)
    reports = ReportFile(workdir / METRICS_FILE, report) if report is not None else None
    if stop_requested():  # the group's SIGTERM came before the program existed
        return Status.START, "stopped before the command started", user
    try:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        return Status.ERR_START, f"cannot run {argv[0]!r}: {e.strerror or e}", user
    if stop_requested():
        # It arrived while we were starting the program, which may have missed it.
        proc.send_signal(signal.SIGTERM)
    on_started()
    seen = _stamp(state_path)
    while True:
        try:
            rc = proc.wait(timeout=poll)
            break
        except subprocess.TimeoutExpired:
            pass
        if reports is not None:
            reports.read()
        stamp = _stamp(state_path)
        if stamp != seen:
            seen = stamp
            try:
                user = read_state_json(state_path, user)
            except CommandError:
                continue  # probably caught mid-write; the final read reports real problems
            on_save(user)
    status, error = _exit_status(rc, stop_requested())
    if reports is not None:
        reports.read()
    try:
        user = read_state_json(state_path, user)
    except CommandError as e:
        status, error = Status.ERR_RUN, (f"{error}; {e}" if error else str(e))
    return status, error, user


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _exit_status(rc: int, stopped: bool) -> tuple[Status, str | None]:
    if rc == 0:
        return Status.DONE, None
    if rc == EXIT_INCOMPLETE:
        return Status.START, None
    reason = f"command {describe_returncode(rc)}"
    if stopped:
        # A program that knows nothing of our protocol dies of the SIGTERM we forwarded:
        # that is a stop (resumable), not a failure.
        return Status.START, f"stopped: {reason}"
    return Status.ERR_RUN, reason
