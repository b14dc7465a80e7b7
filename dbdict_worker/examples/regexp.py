"""The original help's builder example::

    dbdict run dbdict_worker.examples.regexp 'regexp::re.compile' "regexp.pattern='a.*c'"

``make(state.regexp)`` calls ``re.compile(pattern='a.*c')``.
"""
from __future__ import annotations

from dbdict_worker import COMPLETE, make


def experiment(state, channel):
    """Build the pattern from the state and use it."""
    regexp = make(state.regexp)
    state.result = regexp.sub("blahblah", state.get("text", "hello abbbbc there"))
    state.built = f"{type(regexp).__module__}.{type(regexp).__name__}"
    print(state.result)
    return COMPLETE
