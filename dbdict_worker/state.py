"""The state model: DD, flat dotted keys (the reserved ``dbdict.*`` ones included), safe value
parsing, .conf files, builders (make/resolve), experiment paths and the parameter hash used to
skip duplicate jobs.

A state is a nested dict with attribute access. It is stored flattened (``model.n_hidden``), and
its values are restricted to what every backend and the ``.conf`` text format can carry exactly:
None, bool, 64-bit int, float (NaN and infinities included), str, and lists/tuples of those.
User text is never evaluated: ``parse_value`` walks the syntax tree of a restricted literal
grammar itself.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import json
import numbers
import os
import re
import secrets
import unicodedata
import warnings
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from dbdict_worker.constants import RESERVED_PREFIX
from dbdict_worker.errors import ResolveError, StateError, UsageError

__all__ = [
    "DD", "check_key", "check_value", "flatten", "expand", "is_reserved", "user_keys",
    "check_user_keys", "parse_value", "format_value", "parse_params", "format_conf",
    "parse_conf", "read_conf", "write_conf", "check_experiment_path", "resolve", "make",
    "param_hash", "canonical_json",
]

BUILDER_KEY = "__builder__"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Far below the parser's own limit (200 nested brackets), so that whatever check_value accepts,
# format_value writes and parse_value reads back.
_MAX_DEPTH = 100
_ALLOWED = "only int, float, str, bool, None and lists/tuples of those can be stored"
#: A dotted Python name (``re.compile``, ``dict``): identifiers joined by dots. ``[^\W\d]`` is
#: "a letter or '_'", any Unicode letter, as in Python identifiers; ``\Z``, not ``$``, so that a
#: trailing newline is refused.
_DOTTED_NAME = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*\Z")
_RESERVED_DOT = RESERVED_PREFIX + "."


class DD(dict):
    """A dict whose keys are also attributes: ``d.a`` is ``d['a']``.

    A missing attribute raises AttributeError (not KeyError), so getattr with a default,
    hasattr, copy and pickle behave as for any object.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self) -> list[str]:
        # Lets interactive completion offer the keys.
        keys = [k for k in self if isinstance(k, str) and k.isidentifier()]
        return sorted(set(super().__dir__()) | set(keys))

    def copy(self) -> "DD":
        """A shallow copy that is still a DD."""
        return DD(self)

    def __repr__(self) -> str:
        return f"DD({dict.__repr__(self)})"


# --- keys and values ------------------------------------------------------------------------

def check_key(key: str) -> str:
    """Return ``key`` if it is a valid dotted key, else raise StateError naming it."""
    if not isinstance(key, str):
        raise StateError(f"invalid key {key!r}: keys must be strings, not {type(key).__name__}")
    reason = _key_problem(key)
    if reason:
        raise StateError(f"invalid key {key!r}: {reason}")
    return key


@functools.lru_cache(maxsize=65536)
def _key_problem(key: str) -> str | None:
    # Cached: a sweep repeats the same few keys in every one of its (many) jobs.
    if not key:
        return "keys cannot be empty"
    for ch in key:
        # Cc: newlines and friends would break the one-line-per-key .conf format;
        # Cs: lone surrogates cannot be encoded to UTF-8 for the database.
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"control character {ch!r} not allowed"
    if "=" in key:
        return "'=' not allowed (it separates key and value)"
    if "::" in key:
        return "'::' not allowed (it introduces a builder)"
    if key.startswith("#"):
        return "cannot start with '#' (a .conf line starting with '#' is a comment)"
    for segment in key.split("."):
        if not segment:
            return "empty segment (check for a leading, trailing or doubled '.')"
        if segment != segment.strip():
            return "leading or trailing whitespace"
    return None


def check_value(key: str, value: Any) -> Any:
    """Return ``value`` normalized to a storable type, else raise StateError naming the key.

    int/float/str subclasses (IntEnum, numpy.float64, ...) become the plain type, and
    numpy-like scalars are converted with ``.item()``; tuples stay tuples, lists stay lists.
    """
    return _normalize(key, value, 0)


def _normalize(key: str, value: Any, depth: int) -> Any:
    # bool before int: bool is a subclass of int but must keep its type.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = int(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise StateError(f"value of {key!r} is too large: integers must fit in signed 64 bits")
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _check_str(key, str(value))
    if isinstance(value, (list, tuple)):
        if depth >= _MAX_DEPTH:
            raise StateError(f"value of {key!r} has lists nested deeper than {_MAX_DEPTH} levels")
        items = [_normalize(key, item, depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    if hasattr(value, "item") and (isinstance(value, numbers.Real)
                                   or type(value).__name__ in ("bool_", "bool")):
        # numpy scalars (int64, float32, bool_) are not Python ints/floats; .item() converts.
        plain = value.item()
        if isinstance(plain, (bool, int, float)):
            return _normalize(key, plain, depth)
    where = " inside a list" if depth else ""
    raise StateError(f"value of {key!r} is {_a(type(value).__name__)}{where}; {_ALLOWED}")


def _check_str(key: str, text: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8: refuse
    # them here rather than fail later in the middle of a save.
    if "\x00" in text:
        raise StateError(f"value of {key!r} contains a NUL character, which cannot be stored")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StateError(f"value of {key!r} is not valid Unicode (lone surrogate)") from None
    return text


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


# --- flat <-> nested --------------------------------------------------------------------------

def flatten(obj: Mapping) -> dict[str, Any]:
    """Nested mappings to one dict with dotted keys; every key and value is checked.

    Insertion order is kept; an empty nested mapping produces nothing. Two spellings of the same
    key (``{'a.b': 1, 'a': {'b': 2}}``) or a key that is also a prefix (``a`` and ``a.b``) raise
    StateError naming both keys, because such a state could not be expanded.
    """
    if not isinstance(obj, Mapping):
        raise StateError(f"a state must be a mapping, not {type(obj).__name__}")
    flat: dict[str, Any] = {}
    _flatten_into(flat, "", obj)
    _check_prefixes(flat)
    return flat


def _flatten_into(flat: dict[str, Any], prefix: str, obj: Mapping) -> None:
    for key, value in obj.items():
        if type(key) is not str:
            where = f" under {prefix!r}" if prefix else ""
            raise StateError(f"invalid key {key!r}{where}: keys must be strings, not {type(key).__name__}")
        full = f"{prefix}.{key}" if prefix else key
        kind = type(value)
        # Fast path for the plain values of a big sweep (this runs once per key per job).
        if kind is float or kind is bool or value is None or (
                kind is int and _INT64_MIN <= value <= _INT64_MAX) or (
                kind is str and value.isascii() and "\x00" not in value):
            normalized = value
        elif isinstance(value, Mapping):
            _flatten_into(flat, full, value)
            continue
        else:
            normalized = check_value(full, value)
        if _key_problem(full) is not None:
            check_key(full)  # raises with the reason
        if full in flat:
            raise StateError(f"key {full!r} is given twice (once nested, once dotted)")
        flat[full] = normalized


def _check_prefixes(flat: Mapping[str, Any]) -> None:
    for key in flat:
        if "." not in key:
            continue
        parts = key.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in flat:
                raise StateError(
                    f"keys {prefix!r} and {key!r} conflict: {prefix!r} cannot be both a value and a group")


def expand(flat: Mapping[str, Any]) -> DD:
    """Dotted keys to nested DDs (DDs all the way down); the inverse of flatten.

    Nested input is accepted too (it is flattened first, which also checks it).
    """
    root = DD()
    for key, value in flatten(flat).items():
        *parents, last = key.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, DD())
        node[last] = value
    return root


# --- reserved keys ----------------------------------------------------------------------------

def is_reserved(key: str) -> bool:
    """True for the keys dbdict-worker owns: ``dbdict`` and ``dbdict.*`` (not ``dbdictx``)."""
    return key == RESERVED_PREFIX or key.startswith(_RESERVED_DOT)


def user_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flat state without the reserved keys."""
    return {k: v for k, v in flat.items() if not is_reserved(k)}


def check_user_keys(flat: Mapping) -> None:
    """Raise StateError if a key is reserved (``dbdict`` or ``dbdict.*``)."""
    for key in flat:
        if key.startswith(RESERVED_PREFIX) and is_reserved(key):
            raise StateError(
                f"{key!r} is reserved: keys under {RESERVED_PREFIX}.* are set by dbdict-worker")


# --- values as text ---------------------------------------------------------------------------

class _NotLiteral(Exception):
    """The text is outside the literal grammar."""


_SCALAR_CONSTANTS = (bool, int, float, str, type(None))
_NAMED_FLOATS = ("nan", "inf")


def parse_value(text: str) -> Any:
    """Parse a restricted Python literal; anything else is the text itself, stripped.

    Accepted: int, float, str, True/False/None, lists and tuples of those, a unary sign on a
    number, and the bare names ``nan`` and ``inf`` (so ``-inf`` works). Nothing is evaluated.
    """
    stripped = text.strip()
    ok, value = _literal(stripped)
    return value if ok else stripped


def _literal(text: str) -> tuple[bool, Any]:
    try:
        with warnings.catch_warnings():
            # Invalid escapes ('\d') warn at parse time; that is noise for a value parser.
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
        return True, _from_node(tree.body)
    except (_NotLiteral, SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False, None


def _from_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in _SCALAR_CONSTANTS:
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_FLOATS:
        return float(node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_from_node(elt) for elt in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = node.operand
        is_number = isinstance(operand, ast.Constant) and type(operand.value) in (int, float)
        if is_number or (isinstance(operand, ast.Name) and operand.id in _NAMED_FLOATS):
            number = _from_node(operand)
            return -number if isinstance(node.op, ast.USub) else number
    raise _NotLiteral


def format_value(value: Any) -> str:
    """The text that parse_value reads back as ``value`` with the same type (``repr``)."""
    return repr(check_value("value", value))


def same_state(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two flat states hold the same keys with values of the same types and
    spellings, i.e. would be stored alike (NaN equals NaN; 1, 1.0 and True differ)."""
    return a.keys() == b.keys() and all(
        type(a[k]) is type(b[k]) and repr(a[k]) == repr(b[k]) for k in a)


def parse_params(args: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` and ``key::dotted.builder`` arguments into a flat dict.

    The value is split off at the first '='; a later argument overrides an earlier one.
    """
    params: dict[str, Any] = {}
    for arg in args:
        key, value = _parse_param(arg)
        params[key] = value
    _check_prefixes(params)
    return params


def _parse_param(arg: str) -> tuple[str, Any]:
    eq, builder = arg.find("="), arg.find("::")
    if builder != -1 and (eq == -1 or builder < eq):
        key = check_key(arg[:builder].strip() + "." + BUILDER_KEY)
        name = arg[builder + 2:].strip()
        if not _DOTTED_NAME.match(name):
            raise UsageError(f"invalid builder {name!r} in {arg!r}: expected a dotted name like pkg.mod.Class")
        return key, name
    if eq == -1:
        raise UsageError(f"expected key=value or key::builder, got {arg!r}")
    key = check_key(arg[:eq].strip())
    return key, check_value(key, parse_value(arg[eq + 1:]))


# --- .conf files ------------------------------------------------------------------------------

def format_conf(state: Mapping) -> str:
    """One ``key = value`` line per flattened key, sorted by key, ending with a newline."""
    flat = flatten(state)
    # flatten already normalized every value, so repr is format_value without a second check.
    return "".join(f"{key} = {flat[key]!r}\n" for key in sorted(flat))


def parse_conf(text: str) -> dict[str, Any]:
    """Parse .conf text (the inverse of format_conf) into a flat dict.

    Blank lines and lines starting with '#' are skipped; a `` # comment`` after a value is
    dropped when the '#' is outside quotes.
    """
    flat: dict[str, Any] = {}
    # split('\n') rather than splitlines(): only '\n' ends a line in the files we write.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, raw = line.partition("=")
        if not sep:
            raise UsageError(f"line {lineno}: expected 'key = value', got {line!r}")
        try:
            key = check_key(key.strip())
            flat[key] = check_value(key, _conf_value(raw.strip()))
        except StateError as e:
            raise StateError(f"line {lineno}: {e}") from None
    try:
        _check_prefixes(flat)
    except StateError as e:
        raise StateError(f"conf: {e}") from None
    return flat


def _conf_value(raw: str) -> Any:
    ok, value = _literal(raw)  # the tokenizer already drops a comment after a literal
    if ok:
        return value
    cut = _comment_start(raw)
    return parse_value(raw if cut is None else raw[:cut])


def unquoted(text: str):
    """Yield ``(index, char)`` for the characters of ``text`` outside Python string quotes
    (backslash escapes inside quotes understood); then ``(len(text), quote)`` if a quote is
    left open (``quote`` is the opening character)."""
    quote = None
    escaped = False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        else:
            yield i, ch
    if quote:
        yield len(text), quote


def _comment_start(raw: str) -> int | None:
    """Index of a whitespace-preceded '#' outside quotes, or None."""
    for i, ch in unquoted(raw):
        if ch == "#" and i > 0 and raw[i - 1].isspace():
            return i
    return None


def read_conf(path: str | os.PathLike) -> dict[str, Any]:
    """Read a .conf file into a flat dict; errors name the file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return parse_conf(text)
    except UsageError as e:
        raise type(e)(f"{os.fspath(path)}: {e}") from None


def write_conf(path: str | os.PathLike, state: Mapping) -> None:
    """Write ``state`` as a .conf file atomically (readers see the old or the new file)."""
    text = format_conf(state)  # fails before touching the disk
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; not possible on every platform, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- experiment paths and builders ------------------------------------------------------------

def check_experiment_path(experiment: str) -> str:
    """Return ``experiment`` if it is a dotted path to a function in a module
    (``mypkg.train.run``: a dotted name with at least one dot), else raise UsageError; the rule
    of ``dbdict-enqueue`` and ``dbdict run``."""
    # resolve()'s own rule plus the dot, so that what passes here is what a worker can import:
    # any Unicode letter may start a name, as in Python identifiers (the commands used to
    # refuse a non-ASCII first letter that imports fine), and a trailing newline is refused
    # (dbdict-enqueue's pattern ended in '$' and let one through, to a job that cannot run).
    if not (isinstance(experiment, str) and "." in experiment
            and _DOTTED_NAME.match(experiment)):
        raise UsageError(f"experiment must be a dotted path such as mypkg.train.run, got "
                         f"{experiment!r}")
    return experiment


def resolve(name: str) -> Any:
    """Import ``a.b.c``: the module ``a``, then attributes, importing submodules as needed.

    Raises ResolveError naming ``name`` and the part that failed; an exception raised while
    importing the user's module is chained.
    """
    if not isinstance(name, str) or not _DOTTED_NAME.match(name):
        raise ResolveError(f"cannot resolve {name!r}: not a dotted Python name")
    first, *rest = name.split(".")
    obj = _import(name, first)
    path = first
    for part in rest:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            if not isinstance(obj, ModuleType):
                raise ResolveError(f"cannot resolve {name!r}: {type(obj).__name__} {path!r} "
                                   f"has no attribute {part!r}") from None
            obj = _import(name, f"{path}.{part}", parent=path)
        path = f"{path}.{part}"
    return obj


def _import(name: str, module: str, parent: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            if parent is not None:
                raise ResolveError(f"cannot resolve {name!r}: module {parent!r} has no attribute "
                                   f"{module.rsplit('.', 1)[1]!r}") from None
            raise ResolveError(f"cannot resolve {name!r}: {e}") from None
        raise ResolveError(f"cannot resolve {name!r}: importing {module!r} raised "
                           f"{_one_line(e)}") from e
    except Exception as e:  # any error in the user's module: say where, keep the original
        raise ResolveError(f"cannot resolve {name!r}: importing {module!r} raised "
                           f"{_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def make(obj: Any) -> Any:
    """Build objects from a state: every mapping with a ``__builder__`` key becomes
    ``resolve(builder)(**siblings)``, innermost first; other mappings come back as DDs.
    """
    if not isinstance(obj, Mapping):
        return obj
    return _realize(expand(obj))


def _realize(node: Any) -> Any:
    if not isinstance(node, Mapping):
        return node
    built = DD((key, _realize(value)) for key, value in node.items())
    if BUILDER_KEY not in built:
        return built
    builder = resolve(built.pop(BUILDER_KEY))
    return builder(**built)


# --- hashing ----------------------------------------------------------------------------------

def canonical_json(value: Any) -> str:
    """Deterministic JSON text (sorted keys, no spaces, UTF-8 kept, NaN allowed; tuples as lists)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True)


def param_hash(flat: Mapping, *, checked: bool = False) -> str:
    """sha256 hex digest of the state's canonical JSON, reserved ``dbdict.*`` keys excluded.

    Equal parameters give equal hashes in any process; 1, 1.0, True and '1' all differ.
    ``checked=True`` says ``flat`` already came out of :func:`flatten` (skips checking again).
    """
    checked_flat = flat if checked else flatten(flat)
    user = checked_flat
    if any(k.startswith(RESERVED_PREFIX) for k in checked_flat):  # the copy is rarely needed
        user = user_keys(checked_flat)
    return hashlib.sha256(canonical_json(user).encode("utf-8")).hexdigest()
