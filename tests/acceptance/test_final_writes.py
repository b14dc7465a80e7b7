"""The worker's final writes through real workers: the ends of jobs are written in batches
(one commit for those that ended together), a state left as it was booked is not rewritten
(and stays exact), and a state changed and changed back during the run ends as the job left
it."""
from __future__ import annotations

import sqlalchemy as sa

from dbdict_worker.constants import Status
from tests.acceptance.test_worker_edges import FAST, code_dir
from tests.support.waiting import wait_for

#: Saves a changed state, waits for the test to have seen it in the database, then puts
#: the old value back and returns COMPLETE.
BACK_AND_FORTH = """
import os, time

def experiment(state, channel):
    state.x = state.x + 1
    channel.save()
    while not os.path.exists(state.flag):
        time.sleep(0.02)
    state.x = state.x - 1
    return None
"""

TRICKY = {"x": 1, "f": 1.0, "b": True, "n": None, "nan": float("nan"), "t": (1, "a", [2.5])}


def _state_row_versions(pg_store, ids: list[int]) -> dict[tuple[int, str], str]:
    """The physical version (xmin) of each state row: a rewrite gives a row a new one."""
    with pg_store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT job_id, key, xmin::text FROM state "
                                    "WHERE job_id = ANY(:ids)"), {"ids": ids})
        return {(job_id, key): xmin for job_id, key, xmin in rows}


def test_unchanged_states_are_kept_not_rewritten_and_batches_finish_every_job(
        pg_store, pg_url, workers):
    states = [dict(TRICKY, i=i) for i in range(12)]
    ids = pg_store.enqueue("dbdict_worker.examples.noop", states).created
    before = _state_row_versions(pg_store, ids)
    w = workers(pg_url, "w", *FAST, "--slots", "3", "--until-empty")
    assert w.wait(120) == 0
    for job_id, want in zip(ids, states):
        job, got = pg_store.job(job_id)
        assert job.status == Status.DONE and job.finished_at is not None
        assert got.keys() == want.keys()
        assert all(type(got[k]) is type(want[k]) and repr(got[k]) == repr(want[k])
                   for k in want)
        assert [e.kind for e in pg_store.events(job_id)] == ["booked", "finished"]
    assert _state_row_versions(pg_store, ids) == before


def test_a_state_changed_and_changed_back_ends_as_the_job_left_it(
        pg_store, pg_url, tmp_path, workers):
    flag = tmp_path / "seen"
    (job_id,) = pg_store.enqueue("back_and_forth.experiment",
                                 [{"x": 1, "flag": str(flag)}]).created
    env = code_dir(tmp_path, back_and_forth=BACK_AND_FORTH)
    w = workers(pg_url, "w", *FAST, "--until-empty", env=env)
    wait_for(lambda: pg_store.job(job_id)[1]["x"] == 2, 60, "the save written")
    flag.touch()
    assert w.wait(120) == 0
    job, state = pg_store.job(job_id)
    assert job.status == Status.DONE
    assert state["x"] == 1  # the saved x=2 was replaced by the final state
