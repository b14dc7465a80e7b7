"""What the live pages and the report share: the Jinja2 environment (autoescaping), the static
directory, and data embedded in a page as JSON that no value can break out of."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

from dbdict_worker.constants import SHOWN_ORDER
from dbdict_worker.export import dumps

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)
#: Status names in the order the pages show them.
STATUS_ORDER = tuple(s.name for s in SHOWN_ORDER)


def environment() -> jinja2.Environment:
    """Templates with autoescaping on for every file: user strings never become markup."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def to_json(obj: Any) -> str:
    """``obj`` as JSON (NaN and infinities as strings, as every endpoint writes them)."""
    return dumps(obj, nan="string", ensure_ascii=False)


def embed_json(obj: Any) -> str:
    """``obj`` as JSON fit for a ``<script type="application/json">`` element: every ``<``
    is written ``\\u003c`` (still the same JSON string), so neither ``</script>`` nor
    ``<!--`` in a value can end the element; U+2028/9 are escaped for old parsers."""
    text = to_json(obj).replace("<", "\\u003c").replace(">", "\\u003e")
    return text.replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029",
                                                                             "\\u2029")


def inline_script(text: str) -> str:
    """A script's source made safe to inline in a ``<script>`` element (``</script`` and
    ``<!--`` cannot occur in the result; both forms are the same JavaScript)."""
    return _SCRIPT_END.sub(r"<\\/\1", text).replace("<!--", "<\\!--")
