"""The tail of one attempt's output, read from the workdir's ``stdout``/``stderr`` files.

A workdir's output files are appended to by every attempt (the workdir is pulled from the
exproot each time), so an attempt's output is what lies past the size each file had when its
child started (:attr:`~dbdict_worker.job.process.JobProcess.output_offsets`).

>>> read_tail("/scratch/job-17/stdout", start=1200, limit=65536)
Tail(text='epoch 3 loss 0.12\\n', size=4711)

No database here: :mod:`dbdict_worker.worker.logship` ships what this reads.
"""
from __future__ import annotations

import dataclasses
import os

#: What a worker keeps of each attempt's stdout and of its stderr (bytes), unless told.
DEFAULT_LOG_TAIL = 64 * 1024
#: The two streams, named as in the workdir and the job_logs table.
STREAMS = ("stdout", "stderr")
#: What stands for a byte that cannot be stored (invalid UTF-8, NUL: PostgreSQL text has none).
REPLACEMENT = "\ufffd"


@dataclasses.dataclass(frozen=True)
class Tail:
    """The last bytes of an attempt's output as text, and ``size``: how many bytes of output
    the attempt had written up to the end of ``text``."""

    text: str
    size: int


def output_size(path: str | os.PathLike, start: int) -> int:
    """Bytes written to ``path`` past ``start`` (0 when it does not exist)."""
    try:
        return max(0, os.stat(path).st_size - start)
    except OSError:
        return 0


def read_tail(path: str | os.PathLike, start: int, limit: int, *, final: bool = True) -> Tail:
    """The last (at most) ``limit`` bytes written to ``path`` past offset ``start``, decoded
    as UTF-8 (bad bytes and NULs replaced), cut at a character boundary.

    While the job runs (``final`` False) a character still being written (an incomplete
    UTF-8 sequence at the very end) is left for the next read, and ``size`` stops before it,
    so that a reader printing the new bytes never prints half a character.
    """
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            begin = max(start, end - limit)
            f.seek(begin)
            data = f.read(max(0, end - begin))
    except OSError:
        return Tail("", 0)
    end = begin + len(data)
    if not final:
        held = _incomplete_end(data)
        data = data[:len(data) - held]
        end -= held
    if begin > start:
        # Cut inside the stream: skip the continuation bytes of a character begun earlier.
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
            skip += 1
        data = data[skip:]
    text = data.decode("utf-8", errors="replace").replace("\x00", REPLACEMENT)
    return Tail(text, max(0, end - start))


def _incomplete_end(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 character not finished yet."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        if byte & 0x80 == 0:  # ASCII: complete
            return 0
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
            4 if byte & 0xF8 == 0xF0 else 1
        return back if back < need else 0
    return 0


def new_part(text: str, size: int, shown: int) -> tuple[bytes, int]:
    """What a follower that has printed ``shown`` bytes of an attempt's output prints next,
    given the stored tail ``text`` covering up to ``size``: (the new bytes it holds, how many
    new bytes were not kept). Exact for valid UTF-8; replaced bytes count as their UTF-8
    replacement, so output that is not UTF-8 may be off by a few bytes."""
    new = size - shown
    if new <= 0:
        return b"", 0
    data = text.encode("utf-8")
    if new > len(data):
        return data, new - len(data)
    return data[len(data) - new:], 0
