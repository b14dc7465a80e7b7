"""Reading the tail of one attempt's output from a workdir file (job/logtail.py)."""
from __future__ import annotations

from dbdict_worker.job.logtail import REPLACEMENT, new_part, output_size, read_tail


def test_an_attempt_sees_only_what_it_wrote_past_its_offset(tmp_path):
    path = tmp_path / "stdout"
    path.write_bytes(b"attempt 1 said this\n")
    start = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"attempt 2\n")
    tail = read_tail(path, start, 1000)
    assert (tail.text, tail.size) == ("attempt 2\n", 10)
    assert output_size(path, start) == 10


def test_only_the_last_bytes_are_kept_and_size_counts_them_all(tmp_path):
    path = tmp_path / "stdout"
    data = b"".join(b"%09d\n" % i for i in range(1000))  # 10 000 bytes
    path.write_bytes(data)
    tail = read_tail(path, 0, 1000)
    assert tail.text.encode() == data[-1000:]
    assert tail.size == 10_000


def test_a_cut_inside_a_character_skips_its_remains(tmp_path):
    path = tmp_path / "stdout"
    path.write_bytes("é".encode() * 100)  # 2 bytes each
    tail = read_tail(path, 0, 11)  # 11 bytes: starts on the second byte of an é
    assert tail.text == "é" * 5
    assert REPLACEMENT not in tail.text


def test_a_character_being_written_waits_for_the_next_live_read(tmp_path):
    path = tmp_path / "stdout"
    path.write_bytes(b"ok " + "€".encode()[:2])  # the euro sign's last byte not yet written
    live = read_tail(path, 0, 100, final=False)
    assert (live.text, live.size) == ("ok ", 3)
    final = read_tail(path, 0, 100, final=True)  # after the exit, it never will be
    assert final.text == "ok " + REPLACEMENT and final.size == 5


def test_bad_bytes_and_nuls_are_replaced(tmp_path):
    path = tmp_path / "stdout"
    path.write_bytes(b"a\x00b\xffc\n")
    tail = read_tail(path, 0, 100)
    assert tail.text == f"a{REPLACEMENT}b{REPLACEMENT}c\n"
    assert tail.size == 6


def test_a_missing_file_is_empty(tmp_path):
    assert read_tail(tmp_path / "nothing", 0, 100).size == 0
    assert output_size(tmp_path / "nothing", 0) == 0


def test_a_follower_prints_only_the_new_bytes_and_counts_what_it_missed():
    assert new_part("abcdef", 6, 4) == (b"ef", 0)
    assert new_part("abcdef", 6, 6) == (b"", 0)
    # 100 bytes written since, only the last 6 kept: all of them, and 94 not kept.
    assert new_part("abcdef", 104, 4) == (b"abcdef", 94)
