"""The bench's sample job states: ints, floats and strings, every one distinct."""
from __future__ import annotations

from typing import Any


def sample_states(n: int, keys: int = 10, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct states with ints, floats and strings (the ``offset``-th on)."""
    def value(i: int, k: int) -> Any:
        if k % 3 == 0:
            return i * keys + k
        if k % 3 == 1:
            return i / (k + 1)
        return f"s{i}-{k}"
    return [{f"p{k}": value(i, k) for k in range(keys)} for i in range(offset, offset + n)]
