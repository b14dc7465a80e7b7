"""Bad input and bad databases: one clear line on stderr, exit 1 or 2, nothing written,
no password printed."""
from __future__ import annotations

import sqlalchemy as sa

from dbdict_worker.db.schema import VERSION_TABLE
from tests.acceptance.conftest import Cli
from tests.support.pgserver import free_port


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def nothing_written(cli: Cli) -> None:
    assert cli.json("dbdict", "list", "--json") == []


def test_unparsable_parameter(cli):
    proc = cli("dbdict-enqueue", "pkg.exp", "x=1", "oops", ok=False)
    assert proc.returncode == 2 and "oops" in one_line(proc)
    nothing_written(cli)


def test_reserved_key(cli):
    proc = cli("dbdict-enqueue", "pkg.exp", "x=1", "dbdict.status=2", ok=False)
    assert proc.returncode == 2 and "dbdict.status" in one_line(proc)
    nothing_written(cli)


def test_unstorable_value_in_sweep_file(cli, tmp_path):
    (tmp_path / "s.json").write_text('{"a": [1, 2], "b": [[{"deep": 1}]]}')
    proc = cli("dbdict-enqueue", "pkg.exp", "--sweep", "s.json", ok=False)
    assert proc.returncode == 2 and "'b'" in one_line(proc)
    nothing_written(cli)


def test_missing_table(cli):
    cli("dbdict-enqueue", "pkg.exp", "x=1", "--table", "real")
    proc = cli("dbdict", "list", "--table", "nope", ok=False)
    assert proc.returncode == 1
    assert "no table 'nope'" in one_line(proc) and "real" in proc.stderr


def test_garbage_on_the_command_line(cli):
    for args in (["dbdict", "list", "--status", "BOGUS"],
                 ["dbdict-enqueue", "pkg.exp", "--priority", "abc"],
                 ["dbdict", "set-priority", "high", "1"],
                 ["dbdict", "cancel"],
                 ["dbdict", "list", "--where", "noequals"],
                 ["dbdict", "frobnicate"],
                 ["dbdict-enqueue", "not a path", "x=1"],
                 ["dbdict-enqueue", "pkg.exp", "x={{1,2"]):
        proc = cli(*args, ok=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    nothing_written(cli)


def test_malformed_url(tmp_path):
    cli = Cli("mysql+nothing:/x", tmp_path)
    proc = cli("dbdict", "list", ok=False)
    assert proc.returncode == 2 and "URL" in one_line(proc)


def test_unreachable_database(tmp_path):
    cli = Cli(f"postgresql://nobody:hunter2-secret@127.0.0.1:{free_port()}/db", tmp_path)
    proc = cli("dbdict-enqueue", "pkg.exp", "x=1", ok=False, env={"DBDICT_RETRY_SECONDS": "1"})
    assert proc.returncode == 1
    line = one_line(proc)
    assert "unreachable" in line and "hunter2-secret" not in proc.stderr + proc.stdout


def test_wrong_password_is_not_retried_nor_printed(private_pg, tmp_path):
    cli = Cli(private_pg.url(password="Wr0ng-Passw0rd"), tmp_path)
    proc = cli("dbdict", "db", "upgrade", ok=False, env={"DBDICT_RETRY_SECONDS": "30"})
    assert proc.returncode == 1
    line = one_line(proc)
    assert "password authentication failed" in line
    assert "Wr0ng-Passw0rd" not in proc.stderr + proc.stdout
    # The right password works, and is not echoed either.
    good = Cli(private_pg.url(), tmp_path)
    proc = good("dbdict", "db", "upgrade")
    assert private_pg.password not in proc.stdout + proc.stderr and "***" in proc.stdout


def test_password_from_pgpassword(private_pg, tmp_path):
    url = f"postgresql://{private_pg.user}@127.0.0.1:{private_pg.port}/postgres"
    cli = Cli(url, tmp_path)
    proc = cli("dbdict", "db", "upgrade", env={"PGPASSWORD": private_pg.password})
    assert proc.returncode == 0


def test_missing_and_outdated_schema(empty_pg_url, tmp_path):
    cli = Cli(empty_pg_url, tmp_path)
    proc = cli("dbdict-enqueue", "pkg.exp", "x=1", ok=False)
    assert proc.returncode == 1 and "dbdict db upgrade" in one_line(proc)
    cli("dbdict", "db", "upgrade")
    engine = sa.create_engine(empty_pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0000'"))
    engine.dispose()
    for args in (["dbdict-enqueue", "pkg.exp", "x=1"], ["dbdict", "list"],
                 ["dbdict", "export"]):
        proc = cli(*args, ok=False)
        assert proc.returncode == 1 and "dbdict db upgrade" in one_line(proc)
    proc = cli("dbdict", "db", "upgrade", ok=False)
    assert proc.returncode == 1 and "0000" in one_line(proc)
    nothing_written_pg(empty_pg_url)


def nothing_written_pg(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 0
    engine.dispose()


BAD_TABLE_NAMES = ["a/b", "..", ".", "a\nb", "x" * 300, "a,b"]


def test_table_names_that_cannot_be_a_directory_are_refused(cli):
    for name in BAD_TABLE_NAMES:
        starts = [] if name == "a,b" else [  # for a worker: a list
            ["dbdict-worker", "start", "--until-empty", "--table", name]]
        for args in [["dbdict-enqueue", "pkg.exp", "x=1", "--table", name],
                     ["dbdict-enqueue", "pkg.exp", "x=1", "--dry-run", "--table", name],
                     *starts]:
            proc = cli(*args, ok=False)
            assert proc.returncode == 2, (args, proc.stderr)
            # A comma separates tables elsewhere (DBDICT_TABLE=t1,t2): enqueue takes one.
            expected = "takes one table" if name == "a,b" else "invalid table name"
            assert expected in one_line(proc), (args, proc.stderr)
    nothing_written(cli)


def test_a_padded_table_name_means_the_same_table_to_every_command(cli):
    # --table and DBDICT_TABLE are read the same way everywhere: items are stripped.
    cli("dbdict-enqueue", "pkg.exp", "x=1", "--table", " padded")
    assert [j["table"] for j in cli.json("dbdict", "list", "--json", "--table", "padded ")] \
        == ["padded"]


def test_a_table_in_the_url_is_one_directory_name(pg_url, tmp_path):
    for tail in ("/tbl/extra", "/..", "/a,b"):
        proc = Cli(pg_url + tail, tmp_path)("dbdict-enqueue", "pkg.exp", "x=1", ok=False)
        assert proc.returncode == 2, (tail, proc.stderr)
        assert "invalid table name" in one_line(proc)
    nothing_written_pg(pg_url)
    Cli(pg_url + "/tbl", tmp_path)("dbdict-enqueue", "pkg.exp", "x=1")  # one name is fine
