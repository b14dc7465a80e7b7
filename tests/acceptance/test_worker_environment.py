"""Bad data never takes a worker down, and the worker's own environment is not the job's
fault: real workers, real mounts (a read-only and a tiny tmpfs), a PATH without rsync, a
missing exproot, tables that do not exist yet."""
from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from dbdict_worker.constants import EXIT_ENVIRONMENT, Status
from tests.acceptance.conftest import Cli
from tests.support.waiting import wait_for

LOOP = "dbdict_worker.examples.loop"


def mountable() -> str | None:
    """Why tmpfs mounts are not possible here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block (unmounted after, even on failure)."""
    why = mountable()
    if why:
        pytest.skip(why)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a file into ``path`` until its file system is full; returns the file."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def rename_table(url: str, old: str, new: str) -> None:
    """Give a job table a name the enqueue would refuse (as an older version allowed)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE job_tables SET name = :new WHERE name = :old"),
                     {"new": new, "old": old})
    engine.dispose()


def db_dir_name(url: str) -> str:
    """The <db> part of local workdir paths (the database's name, a SQLite file's stem)."""
    name = url.rsplit("/", 1)[-1]
    return Path(name).stem if url.startswith("sqlite") else name


def status_json(url: str, tmp: Path) -> dict:
    return json.loads(Cli(url, tmp)("dbdict-worker", "status", "--json").stdout)


# --------------------------------------------------------------------------------------------
# One job's data


def test_a_job_whose_data_cannot_be_a_directory_fails_alone(store, db_url, tmp_path, workers):
    (bad_table,) = store.enqueue(LOOP, [{"total": 3}], table="soon-bad").created
    (in_the_way,) = store.enqueue(LOOP, [{"total": 4}], table="ok").created
    (good,) = store.enqueue(LOOP, [{"total": 300, "sleep": 0.01}], table="ok").created
    rename_table(db_url, "soon-bad", "a/b")
    base = tmp_path / "work"
    # A file where the job's directory should be: that job's path cannot be a directory.
    (base / db_dir_name(db_url) / "ok").mkdir(parents=True)
    (base / db_dir_name(db_url) / "ok" / str(in_the_way)).write_text("not a directory")
    w = workers(db_url, "w", "--slots", "2", "--until-empty", "--workdir-base", str(base))
    assert w.wait(120) == 0, w.log()
    jobs = {j.id: j for j in store.jobs()}
    assert jobs[bad_table].status == Status.ERR_START
    assert "cannot be used as a directory name" in jobs[bad_table].error
    assert jobs[in_the_way].status == Status.ERR_START
    assert "cannot create workdir" in jobs[in_the_way].error
    assert jobs[good].status == Status.DONE  # the worker went on with the others
    assert "Traceback" not in w.log()


# --------------------------------------------------------------------------------------------
# The worker's own environment


def test_read_only_workdir_base_gives_the_jobs_back_and_exits_3(store, db_url, tmp_path,
                                                                 workers):
    ids = store.enqueue(LOOP, [{"total": 3, "i": i} for i in range(5)]).created
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        w = workers(db_url, "w", "--slots", "2", "--workdir-base", str(ro),
                    "--max-env-failures", "3")
        # While it pauses, status says why.
        rows = wait_for(lambda: [r for r in status_json(db_url, tmp_path)["workers"]
                                 if r["state"].startswith("degraded:")] or
                        w.proc.poll() is not None, 60, "a degraded worker in status")
        assert rows is not True, w.log()
        assert "read-only file system (EROFS)" in rows[0]["state"]
        shown = Cli(db_url, tmp_path)("dbdict-worker", "status").stdout
        assert "degraded: cannot create" in shown and "(EROFS)" in shown
        assert w.wait(120) == EXIT_ENVIRONMENT, w.log()
    log = w.log()
    assert "goes back to the queue (attempt not counted)" in log
    assert "exiting 3" in log and "Traceback" not in log
    for job in store.jobs():  # nothing lost, nothing counted
        assert job.status == Status.START and job.attempts == 0, job
        assert job.error is None
    unbooked = [e for i in ids for e in store.events(i) if e.kind == "unbooked"]
    assert unbooked and all("(EROFS)" in e.detail for e in unbooked)


def test_a_full_disk_pauses_booking_until_there_is_room_again(pg_store, pg_url, tmp_path, workers):
    store = pg_store
    (job_id,) = store.enqueue(LOOP, [{"total": 5}]).created
    with tmpfs(tmp_path / "small", "size=256k") as small:
        filler = fill(small)
        w = workers(pg_url, "w", "--workdir-base", str(small), "--until-empty")
        w.wait_log("booking again in 2s")
        job = store.job(job_id)[0]
        assert job.status == Status.START and job.attempts == 0
        assert "no space left on device (ENOSPC)" in w.log()
        filler.unlink()  # room again: the next booking (after the pause) runs the job
        assert w.wait(60) == 0, w.log()
        assert "can start jobs again" in w.log()
    job, state = store.job(job_id)
    assert job.status == Status.DONE and job.attempts == 1 and state["result"] == 15
    kinds = [e.kind for e in store.events(job_id)]
    assert kinds == ["booked", "unbooked", "booked", "finished"], kinds


FILL_DISK = '''
import os


def experiment(state, channel):
    try:
        with open("big", "wb") as f:
            while True:
                f.write(bytes(65536))
    finally:
        os.remove("big")  # room again for the next job: the failure stays this job's alone
'''


def test_a_run_that_fills_the_disk_names_it(pg_store, pg_url, tmp_path, workers):
    store = pg_store
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "filldisk.py").write_text(FILL_DISK)
    (job_id,) = store.enqueue("filldisk.experiment", [{"x": 1}]).created
    (after,) = store.enqueue(LOOP, [{"total": 2}]).created
    with tmpfs(tmp_path / "small", "size=512k") as small:
        w = workers(pg_url, "w", "--workdir-base", str(small), "--until-empty",
                    env={"PYTHONPATH": str(tmp_path / "code")})
        assert w.wait(120) == 0, w.log()
    job = store.job(job_id)[0]
    assert job.status == Status.ERR_RUN
    assert job.error.startswith("no space left on device (ENOSPC)"), job.error
    assert store.job(after)[0].status == Status.DONE  # the worker itself was fine


def test_rsync_missing_is_the_workers_fault(pg_store, pg_url, tmp_path, workers):
    store = pg_store
    (job_id,) = store.enqueue(LOOP, [{"total": 2}]).created
    empty = tmp_path / "no-programs"
    empty.mkdir()
    (tmp_path / "exproot").mkdir()
    w = workers(pg_url, "w", "--exproot", str(tmp_path / "exproot"),
                "--max-env-failures", "1", env={"PATH": str(empty)})
    assert w.wait(60) == EXIT_ENVIRONMENT, w.log()
    assert "rsync is not installed" in w.log()
    job = store.job(job_id)[0]
    assert job.status == Status.START and job.attempts == 0
    assert [e.kind for e in store.events(job_id)] == ["booked", "unbooked"]


def test_a_missing_exproot_is_not_created(pg_store, pg_url, tmp_path, workers):
    store = pg_store
    (job_id,) = store.enqueue(LOOP, [{"total": 2}]).created
    (tmp_path / "nfs").mkdir()  # the mount point of a file system that is not mounted
    root = tmp_path / "nfs" / "exproot"
    w = workers(pg_url, "w", "--exproot", str(root), "--max-env-failures", "1")
    assert w.wait(60) == EXIT_ENVIRONMENT, w.log()
    assert "does not exist (not mounted?)" in w.log()
    assert not root.exists()
    job = store.job(job_id)[0]
    assert job.status == Status.START and job.attempts == 0


# --------------------------------------------------------------------------------------------
# Tables that do not exist yet


def test_a_worker_waits_for_its_table(store, db_url, tmp_path, workers):
    w = workers(db_url, "w", "--table", "later")
    w.wait_log("waiting for table(s) later")
    assert w.proc.poll() is None
    (job_id,) = store.enqueue(LOOP, [{"total": 2}], table="later").created
    wait_for(lambda: store.job(job_id)[0].status == Status.DONE, 60, "the job done")
    assert w.log().count("waiting for table") == 1
    w.signal()
    assert w.wait(60) == 0


def test_until_empty_with_a_table_not_created_yet_exits_0(db_url, tmp_path, workers):
    w = workers(db_url, "w", "--table", "later", "--until-empty")
    assert w.wait(60) == 0, w.log()
    assert "queue empty" in w.log()
