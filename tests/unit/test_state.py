"""The state model: DD, keys and values, flatten/expand, literal parsing, .conf files,
resolve/make and the parameter hash."""
from __future__ import annotations

import copy
import enum
import math
import numbers
import os
import pickle
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from dbdict_worker.errors import ResolveError, StateError, UsageError
from dbdict_worker.state import (
    DD, canonical_json, check_experiment_path, check_key, check_user_keys, check_value, expand,
    flatten, format_conf, format_value, is_reserved, make, param_hash, parse_conf, parse_params,
    parse_value, read_conf, resolve, user_keys, write_conf,
)

REPO = Path(__file__).resolve().parents[2]


def same(a, b) -> bool:
    """Equal with the same types all the way down, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def same_mapping(a, b) -> bool:
    return set(a) == set(b) and all(same(a[k], b[k]) for k in a)


# Values that tend to break a text format or a type.
TRICKY_VALUES = [
    0, 1, -1, 1.0, -0.0, True, False, None, "1", "", "True", "None", "nan",
    float("nan"), float("inf"), float("-inf"), 2**63 - 1, -(2**63), 1e300, 5e-324, 0.1,
    (1,), (), [], [1], [1, 1.0, True, "1"], (1, [2, (3, [])]), [float("nan"), float("-inf")],
    "it's", 'say "hi"', "both ' and \"", "line1\nline2\r\n", "tab\there", "back\\slash",
    "# not a comment", "a = b", "x # y = z", "ünïcødé ✓ 日本語 🎉", "\u2028sep\u2029",
    "  padded  ", "adam", "[1, 2]", "'quoted'", "{1: 2}", "a" * (1 << 20),
]


# --- DD ---------------------------------------------------------------------------------------

def test_dd_attribute_access_reads_writes_and_deletes_keys():
    d = DD(a=1)
    d.b = 2
    assert d.a == 1 and d["b"] == 2
    del d.a
    assert d == {"b": 2}


def test_dd_missing_attribute_is_attribute_error():
    d = DD()
    with pytest.raises(AttributeError):
        d.missing
    with pytest.raises(AttributeError):
        del d.missing
    assert getattr(d, "missing", None) is None
    assert not hasattr(d, "missing")


def test_dd_copy_is_a_dd_and_independent():
    d = DD(a=1)
    for c in (d.copy(), copy.copy(d), copy.deepcopy(d)):
        assert type(c) is DD and c == d
        c.a = 2
        assert d.a == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_dd_pickles(protocol):
    d = DD(a=1, sub=DD(b=[1, 2]))
    back = pickle.loads(pickle.dumps(d, protocol=protocol))
    assert back == d and type(back) is DD and type(back.sub) is DD
    assert back.sub.b == [1, 2]


def test_dd_repr_and_no_conversion_of_assigned_dicts():
    d = DD()
    d.sub = {"x": 1}
    assert type(d.sub) is dict
    assert repr(DD(a=1)) == "DD({'a': 1})"


# --- check_key / check_value ------------------------------------------------------------------

@pytest.mark.parametrize("key", ["a", "a.b", "model.n_hidden", "param 1 1", "é.日本", "__builder__", "a#b"])
def test_check_key_accepts_dotted_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "a..b", ".a", "a.", " a", "a ", "a. b", "a\nb", "a\tb",
                                 "a\x00", "a=b", "a::b", "#a"])
def test_check_key_refuses_and_names_the_key(key):
    with pytest.raises(StateError, match=re.escape(repr(key))):
        check_key(key)


def test_check_key_refuses_non_strings():
    with pytest.raises(StateError, match="must be strings"):
        check_key(1)


@pytest.mark.parametrize("value", [None, True, 3, -(2**63), 2**63 - 1, 0.5, float("nan"),
                                   float("inf"), "", "x" * 100, [1, "a", None], (1, (2.0, [True]))])
def test_check_value_accepts_storable_values(value):
    assert same(check_value("k", value), value)


def test_check_value_refuses_ints_beyond_64_bits():
    for value in (2**63, -(2**63) - 1):
        with pytest.raises(StateError, match=r"'n\.big'.*too large"):
            check_value("n.big", value)


def test_check_value_names_key_and_type_of_a_dict_inside_a_list():
    with pytest.raises(StateError) as e:
        check_value("opt.x", [1, {"a": 1}])
    assert str(e.value) == ("value of 'opt.x' is a dict inside a list; only int, float, str, "
                            "bool, None and lists/tuples of those can be stored")


@pytest.mark.parametrize("value, type_name", [({"a": 1}, "dict"), ({1}, "set"), (b"x", "bytes"),
                                              (1j, "complex"), (object(), "object"),
                                              ([[b"x"]], "bytes")])
def test_check_value_refuses_other_types_naming_them(value, type_name):
    with pytest.raises(StateError, match=rf"value of 'k\.v' is an? {type_name}"):
        check_value("k.v", value)


def test_check_value_converts_subclasses_and_numpy_like_scalars():
    class Color(enum.IntEnum):
        RED = 1

    class FakeInt64:  # stands in for numpy.int64: not an int, but Integral with .item()
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    numbers.Integral.register(FakeInt64)
    assert same(check_value("k", Color.RED), 1)
    assert same(check_value("k", [FakeInt64(7)]), [7])
    with pytest.raises(StateError, match="too large"):
        check_value("k", FakeInt64(2**64))


def test_check_value_refuses_what_the_database_cannot_hold():
    with pytest.raises(StateError, match="'k'.*NUL"):
        check_value("k", "a\x00b")
    with pytest.raises(StateError, match="'k'.*surrogate"):
        check_value("k", "\ud800")
    deep: list = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(StateError, match="'k'.*nested"):
        check_value("k", deep)


# --- flatten / expand -------------------------------------------------------------------------

def test_flatten_makes_dotted_keys_in_insertion_order():
    nested = {"model": {"n_hidden": 100, "act": "relu"}, "lr": 0.1, "empty": {}, "a": {"b.c": 1}}
    assert list(flatten(nested).items()) == [
        ("model.n_hidden", 100), ("model.act", "relu"), ("lr", 0.1), ("a.b.c", 1)]


def test_flatten_names_the_full_key_of_a_bad_value():
    with pytest.raises(StateError, match=r"'opt\.x' is a set"):
        flatten({"opt": {"x": {1, 2}}})


@pytest.mark.parametrize("bad, named", [({"a": {"": 1}}, "'a.'"), ({"a": {1: 2}}, "1"),
                                        ({"a.b": 1, "a": {"b": 2}}, "'a.b'"),
                                        ({"a": 1, "a.b": 2}, "'a' and 'a.b'")])
def test_flatten_refuses_bad_or_conflicting_keys(bad, named):
    with pytest.raises(StateError, match=re.escape(named)):
        flatten(bad)


def test_expand_gives_dds_all_the_way_down_and_inverts_flatten():
    state = expand({"model.n_hidden": 100, "model.opt.lr": 0.1, "seed": 1})
    assert state.model.opt.lr == 0.1 and state.seed == 1
    assert type(state) is DD and type(state.model) is DD and type(state.model.opt) is DD
    assert flatten(state) == {"model.n_hidden": 100, "model.opt.lr": 0.1, "seed": 1}


def test_expand_accepts_nested_input():
    state = expand({"model": {"n_hidden": 3}, "model.act": "tanh"})
    assert state == {"model": {"n_hidden": 3, "act": "tanh"}} and type(state.model) is DD


def test_expand_conflict_names_both_keys():
    with pytest.raises(StateError, match=r"'a' and 'a\.b'"):
        expand({"a": 1, "a.b": 2})


@pytest.mark.parametrize("key", ["dbdict", "dbdict.status"])
def test_check_user_keys_refuses_reserved_keys(key):
    with pytest.raises(StateError, match=rf"'{re.escape(key)}' is reserved: keys under dbdict\.\*"):
        check_user_keys({"lr": 1, key: 2})


def test_check_user_keys_allows_lookalikes():
    check_user_keys({"dbdictx": 1, "my.dbdict": 2, "dbdict_lr": 3})


def test_is_reserved_and_user_keys_draw_the_same_line():
    keys = ["dbdict", "dbdict.id", "dbdict.a.b", "dbdictx", "my.dbdict", "dbdict_lr", "lr"]
    assert [k for k in keys if is_reserved(k)] == ["dbdict", "dbdict.id", "dbdict.a.b"]
    assert user_keys(dict.fromkeys(keys, 0)) == dict.fromkeys(
        ["dbdictx", "my.dbdict", "dbdict_lr", "lr"], 0)


# --- parse_value / format_value ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("3", 3), ("0.1", 0.1), ("'a'", "a"), ("[1,2]", [1, 2]), ("True", True), ("None", None),
    ("adam", "adam"), ("-inf", float("-inf")), ("inf", float("inf")), ("'nan'", "nan"),
    ("1e-3", 0.001), ("(1,)", (1,)), ("a b", "a b"), ("os.system('x')", "os.system('x')"),
    ("-3", -3), ("+2.5", 2.5), ("[nan, -inf]", [float("nan"), float("-inf")]), ("", ""),
    ("  adam  ", "adam"), (" 3 ", 3), ("1.0", 1.0), ("[1, adam]", "[1, adam]"),
    ("{'a': 1}", "{'a': 1}"), ("{1, 2}", "{1, 2}"), ("b'x'", "b'x'"), ("1j", "1j"),
    ("-True", "-True"), ("--1", "--1"), ("1+1", "1+1"), ("a.b", "a.b"), ("[*x]", "[*x]"),
])
def test_parse_value_examples(text, expected):
    assert same(parse_value(text), expected)


def test_parse_value_nan_is_a_float_nan():
    value = parse_value("nan")
    assert isinstance(value, float) and math.isnan(value)


def test_parse_value_of_hostile_text_returns_it_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    hostile = [
        f"__import__('os').system('touch {marker}')",
        f"open({str(marker)!r}, 'w')",
        f"[open({str(marker)!r}, 'w')]",
        "(lambda: 1)()", "[x for x in range(10**9)]", "f'{1}'", "(x := 1)", "9**9**9",
        "globals()", "().__class__.__base__.__subclasses__()",
    ]
    for text in hostile:
        assert parse_value(text) == text
    assert not marker.exists()


@pytest.mark.parametrize("text", ["[" * 100_000, "(" * 1000 + ")" * 1000, "1" * 5000, "'\x00'"])
def test_parse_value_survives_absurd_input(text):
    assert parse_value(text) == text


def test_parse_value_invalid_escape_is_kept_without_warning(recwarn):
    assert parse_value("'\\d+'") == "\\d+"
    assert not recwarn.list


@pytest.mark.parametrize("value", TRICKY_VALUES, ids=lambda v: repr(v)[:30])
def test_format_value_round_trips_with_types(value):
    assert same(parse_value(format_value(value)), value)


def test_format_value_of_non_finite_floats():
    assert format_value([float("nan"), float("inf"), float("-inf")]) == "[nan, inf, -inf]"


# --- parse_params -----------------------------------------------------------------------------

def test_parse_params_values_builders_and_overrides():
    params = parse_params(["lr=0.1", "name = adam", "url=a=b", "model::pkg.Model",
                           "model.n=3", "lr=0.01", "tags=[1,'x']"])
    assert same_mapping(params, {"lr": 0.01, "name": "adam", "url": "a=b",
                                 "model.__builder__": "pkg.Model", "model.n": 3, "tags": [1, "x"]})


def test_parse_params_refuses_an_argument_without_separator():
    with pytest.raises(UsageError, match=re.escape("expected key=value or key::builder, got 'foo'")):
        parse_params(["foo"])


@pytest.mark.parametrize("arg, match", [("a..b=1", "'a..b'"), ("=1", "''"), ("k::not a name", "builder"),
                                        ("k::os.", "builder")])
def test_parse_params_checks_keys_and_builders(arg, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        parse_params([arg])


def test_parse_params_refuses_conflicting_keys():
    with pytest.raises(StateError, match=r"'a' and 'a\.b'"):
        parse_params(["a=1", "a.b=2"])


# --- .conf ------------------------------------------------------------------------------------

def test_format_conf_is_sorted_flat_and_newline_terminated():
    text = format_conf({"z": 1, "a": {"b": "x", "c": [1.0, float("nan")]}})
    assert text == "a.b = 'x'\na.c = [1.0, nan]\nz = 1\n"


def test_parse_conf_comments_and_blank_lines():
    text = textwrap.dedent("""\
        # a header
          # indented comment

        name = adam   # the optimizer
        lr = 0.1 # comment after a literal
        tag = 'a # b'  # only the second '#' starts a comment
        url = http://host/#frag
        eq = x=y
    """)
    assert same_mapping(parse_conf(text), {"name": "adam", "lr": 0.1, "tag": "a # b",
                                           "url": "http://host/#frag", "eq": "x=y"})


def test_parse_conf_names_the_bad_line():
    with pytest.raises(UsageError, match="line 3"):
        parse_conf("a = 1\n\njust words\n")
    with pytest.raises(StateError, match=r"line 2: invalid key 'a\.\.b'"):
        parse_conf("a = 1\na..b = 2\n")


def test_conf_round_trip_of_tricky_values():
    state = {f"k{i}": v for i, v in enumerate(TRICKY_VALUES)}
    state.update({"ünï.cødé": "日本", "nested": {"deep": {"x": (1, [2.5])}}, "sp ace": 1})
    back = parse_conf(format_conf(state))
    assert same_mapping(back, flatten(state))
    assert same_mapping(parse_conf(format_conf(back)), back)


def test_write_conf_then_read_conf(tmp_path):
    path = tmp_path / "current.conf"
    path.write_text("old = 1\n")
    write_conf(path, {"a": {"b": float("inf")}, "s": "x\ny"})
    assert same_mapping(read_conf(path), {"a.b": float("inf"), "s": "x\ny"})
    assert os.listdir(tmp_path) == ["current.conf"]  # no temp file left behind


def test_write_conf_with_a_bad_state_leaves_the_old_file(tmp_path):
    path = tmp_path / "current.conf"
    path.write_text("old = 1\n")
    with pytest.raises(StateError):
        write_conf(path, {"bad": {1, 2}})
    assert path.read_text() == "old = 1\n" and os.listdir(tmp_path) == ["current.conf"]


def test_read_conf_error_names_the_file(tmp_path):
    path = tmp_path / "orig.conf"
    path.write_text("no equals sign\n")
    with pytest.raises(UsageError, match=re.escape(str(path)) + ".*line 1"):
        read_conf(path)


# --- resolve / make ---------------------------------------------------------------------------

@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    """A fresh package on sys.path: <name>.mod (not imported by __init__), <name>.bad (raises),
    <name>.needs (imports a missing dependency)."""
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text("def fn(**kw):\n    return ('fn', kw)\nclass Thing:\n    pass\n")
    (root / "bad.py").write_text("x = 1 / 0\n")
    (root / "needs.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_resolve_imports_modules_and_submodules_as_needed(user_pkg):
    assert resolve("re.compile") is re.compile
    assert resolve("os.path.join") is os.path.join
    assert resolve(f"{user_pkg}.mod.fn")(a=1) == ("fn", {"a": 1})


def test_resolve_missing_attribute_names_the_module(user_pkg):
    with pytest.raises(ResolveError) as e:
        resolve(f"{user_pkg}.mod.nope")
    assert str(e.value) == f"cannot resolve '{user_pkg}.mod.nope': module '{user_pkg}.mod' has no attribute 'nope'"
    with pytest.raises(ResolveError, match=f"module '{user_pkg}' has no attribute 'missing'"):
        resolve(f"{user_pkg}.missing.fn")
    with pytest.raises(ResolveError, match=f"type '{user_pkg}.mod.Thing' has no attribute 'x'"):
        resolve(f"{user_pkg}.mod.Thing.x")


def test_resolve_missing_top_module():
    with pytest.raises(ResolveError) as e:
        resolve("nopkg_zz9.x")
    assert str(e.value) == "cannot resolve 'nopkg_zz9.x': No module named 'nopkg_zz9'"
    assert isinstance(e.value, ImportError)


def test_resolve_error_inside_user_module_is_reported_and_chained(user_pkg):
    with pytest.raises(ResolveError) as e:
        resolve(f"{user_pkg}.bad.fn")
    assert str(e.value) == (f"cannot resolve '{user_pkg}.bad.fn': importing '{user_pkg}.bad' "
                            "raised ZeroDivisionError: division by zero")
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(ResolveError, match=f"importing '{user_pkg}.needs' raised ModuleNotFoundError"):
        resolve(f"{user_pkg}.needs.fn")


@pytest.mark.parametrize("name", ["", "a..b", "os.system('x')", "1abc"])
def test_resolve_refuses_non_names(name):
    with pytest.raises(ResolveError, match="not a dotted Python name"):
        resolve(name)


@pytest.mark.parametrize("path", ["pkg.exp", "a.b.c", "_p.run", "paquet.expérience", "été.run"])
def test_check_experiment_path_accepts_what_resolve_could_import(path):
    assert check_experiment_path(path) == path


@pytest.mark.parametrize("path", ["exp", "pkg.exp\n", "pkg..exp", "1pkg.exp", "pkg.exp()",
                                  "pkg. exp", "", ".pkg.exp"])
def test_check_experiment_path_refuses_the_rest(path):
    with pytest.raises(UsageError, match="must be a dotted path such as mypkg.train.run"):
        check_experiment_path(path)


def test_make_the_seed_example():
    params = parse_params(["regexp::re.compile", "regexp.pattern='a.*c'"])
    assert make(expand(params).regexp) == re.compile("a.*c")


def test_make_builds_bottom_up_and_keeps_plain_groups_as_dd():
    built = make({"outer.__builder__": "builtins.dict", "outer.inner.__builder__": "builtins.dict",
                  "outer.inner.x": 1, "outer.plain.y": 2, "z": [1]})
    assert type(built) is DD and built.z == [1]
    assert built.outer == {"inner": {"x": 1}, "plain": {"y": 2}}
    assert type(built.outer) is dict and type(built.outer["plain"]) is DD
    assert make(5) == 5


def test_make_unknown_builder_raises_resolve_error():
    with pytest.raises(ResolveError, match="nopkg_zz9"):
        make({"m.__builder__": "nopkg_zz9.Model"})


# --- param_hash / canonical_json --------------------------------------------------------------

FIXED_STATE = {"model": {"n_hidden": 100}, "name": "é", "lr": 0.1, "dbdict.status": 2}
FIXED_HASH = "77f44866370bc6e3ca78b30b18c8416e0b718584aed5122c77a7ff22952b4ee3"


def test_param_hash_fixed_value():
    # sha256 of '{"lr":0.1,"model.n_hidden":100,"name":"é"}' (the algorithm is specified)
    assert param_hash(FIXED_STATE) == FIXED_HASH


def test_param_hash_ignores_order_nesting_and_reserved_keys():
    a = param_hash({"a": 1, "b.c": 2})
    assert a == param_hash({"b": {"c": 2}, "a": 1}) == param_hash({"a": 1, "b.c": 2, "dbdict.host": "h"})


def test_param_hash_distinguishes_types_and_values():
    hashes = {param_hash({"x": v}) for v in (1, 1.0, True, "1", [1], None, 2, float("nan"))}
    assert len(hashes) == 8


def test_param_hash_is_stable_across_processes():
    code = ("from dbdict_worker.state import param_hash; "
            f"print(param_hash({FIXED_STATE!r}))")
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        assert out == FIXED_HASH


def test_canonical_json_encoding():
    value = {"b": [1, (2.5, "é")], "a": float("nan"), "c": float("-inf"), "d": None}
    assert canonical_json(value) == '{"a":NaN,"b":[1,[2.5,"é"]],"c":-Infinity,"d":null}'
    assert canonical_json(1.0) == "1.0" and canonical_json(True) == "true"


def test_same_state_tells_apart_what_would_be_stored_differently():
    from dbdict_worker.state import same_state

    base = {"a": 1, "b": 0.5, "c": "x", "d": [1, (2.0, None)], "e": float("nan"), "f": True}
    assert same_state(base, dict(base))
    for key, other in (("a", 1.0), ("a", True), ("b", 0.50001), ("c", "y"), ("d", [1, (2, None)]),
                       ("f", 1)):
        assert not same_state(base, {**base, key: other}), (key, other)
    assert not same_state(base, {**base, "g": 1})
    assert not same_state(base, {k: v for k, v in base.items() if k != "a"})
