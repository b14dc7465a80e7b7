#!/usr/bin/env bash
# A worked example: a learning-rate sweep enqueued from a login node, run by workers on the
# compute nodes (SLURM or HTCondor), then read back as a CSV file and a SQL view.
#
#   deploy/examples/sweep-from-login-node.sh slurm     # workers as a SLURM job array
#   deploy/examples/sweep-from-login-node.sh condor    # workers as HTCondor jobs
#   deploy/examples/sweep-from-login-node.sh local     # one worker here (to try it out)
#
# Before the first run, edit the three settings below (or export them): where the database is,
# where job directories live, and the table. Run it from anywhere; it finds the submit files
# itself. It is safe to run again: jobs already queued are skipped, not queued twice.
set -euo pipefail

scheduler="${1:-slurm}"
case "$scheduler" in
    slurm | condor | local) ;;
    *)
        echo "usage: $0 [slurm|condor|local]" >&2
        exit 2
        ;;
esac
repo="$(cd "$(dirname "$0")/../.." && pwd)"
user="${USER:-$(id -un)}"

# --- 1. Settings -------------------------------------------------------------------------------
# The database: a URL WITHOUT a password. libpq finds the password in ~/.pgpass, one line
#   hostname:port:database:username:password
# which must be mode 0600 (libpq ignores a file that others can read). A URL with a password
# would be visible in `ps`, in the job's environment on the cluster and in your shell history.
export DBDICT_DB="${DBDICT_DB:-postgresql://$user@db.cluster.example.org/experiments}"
# Where each job's directory lives for good: a path every compute node sees, or
# ssh://host:/abs/path (rsync over ssh; accept the host key once by hand first).
export DBDICT_EXPROOT="${DBDICT_EXPROOT:-/shared/$user/dbdict-exps}"
# The table (a named group of jobs). Exported, so the workers book only from it.
export DBDICT_TABLE="${DBDICT_TABLE:-demo}"
table="$DBDICT_TABLE"
# How often to look at the queue while waiting (seconds).
poll_seconds="${POLL_SECONDS:-30}"

die() {
    echo "sweep-from-login-node: $*" >&2
    exit 1
}

# True if a database URL carries a password (scheme://user:password@host/...).
url_has_password() {
    local rest="${1#*://}"
    rest="${rest%%/*}"
    [[ "$rest" == *@* ]] || return 1
    [[ "${rest%@*}" == *:* ]]
}

[[ "$DBDICT_DB" != *example.org* ]] || die "edit DBDICT_DB at the top of $0 (or export it)"
if url_has_password "$DBDICT_DB"; then
    die "take the password out of DBDICT_DB (and change it): use ~/.pgpass"
fi
if [[ "$DBDICT_DB" == postgresql* ]]; then
    pgpass="${PGPASSFILE:-$HOME/.pgpass}"
    if [[ ! -f "$pgpass" ]]; then
        echo "note: no $pgpass: fine if the server trusts you, else create it (see above)" >&2
    elif (( 8#$(stat -c %a "$pgpass") & 8#077 )); then
        die "$pgpass can be read by others, and libpq ignores it then: chmod 0600 '$pgpass'"
    fi
fi

# --- 2. The schema (creates the tables the first time; later, migrates or does nothing) -------
dbdict db upgrade

# --- 3. The sweep --------------------------------------------------------------------------------
# 5 learning rates x 2 replicas (seeds) = 10 jobs of the shipped resumable example: it counts to
# `total`, sleeping `sleep` seconds per step and saving every `save_every` steps, so a stopped
# job resumes where it was. The example ignores `lr`; it is stored with each job (and comes
# back in the results) as your own experiment, say mypkg.train.run reading state.lr, would use
# it. Quote {{...}} so the shell leaves the braces alone.
dbdict-enqueue dbdict_worker.examples.loop --table "$table" \
    total=600 sleep=0.5 save_every=10 'lr={{0.1,0.03,0.01,0.003,0.001}}' \
    --repeat 2 --json

# --- 4. Workers ----------------------------------------------------------------------------------
# Each worker exits by itself when the queue is empty (--until-empty). Workers started on
# another day, or by a colleague, book from the same queue: nothing runs twice.
worker_pid=""
case "$scheduler" in
    slurm)
        # 4 workers; the DBDICT_* variables above travel with sbatch's exported environment.
        sbatch --array=1-4 "$repo/deploy/slurm/dbdict-worker.sbatch"
        ;;
    condor)
        # The submit file refers to its wrapper relative to the repository.
        (cd "$repo" && condor_submit deploy/condor/dbdict-worker.sub)
        ;;
    local)
        mkdir -p "$DBDICT_EXPROOT"
        dbdict-worker start --slots 2 --until-empty &
        worker_pid=$!
        ;;
esac

# --- 5. Watch ------------------------------------------------------------------------------------
# `dbdict status` counts jobs per status, `dbdict-worker status` shows the live workers and the
# jobs each runs. Waits until nothing is queued or running any more.
jobs_left() {
    dbdict status --table "$table" --json | python3 -c '
import json, sys
counts = json.load(sys.stdin).get(sys.argv[1], {})
print(counts.get("START", 0) + counts.get("RUNNING", 0))' "$table"
}
while :; do
    dbdict status --table "$table"
    dbdict-worker status --table "$table"
    left=$(jobs_left)
    [[ "$left" == 0 ]] && break
    echo "-- $left job(s) queued or running; next look in ${poll_seconds}s (Ctrl-C stops" \
         "watching, not the workers)"
    sleep "$poll_seconds"
done
if [[ -n "$worker_pid" ]]; then
    wait "$worker_pid"
fi

# Failures, if any: the error's last line is in the list; `dbdict show ID` has the whole story
# (traceback in the workdir's stderr, and the local copy's path for ERR_SYNC).
dbdict list --table "$table" --status ERR_START --status ERR_RUN --status ERR_SYNC

# --- 6. Results ----------------------------------------------------------------------------------
# A CSV file with one row per job and one column per key (parameters, results, dbdict.*).
dbdict export --table "$table" --format csv --output "$table-results.csv"
echo "wrote $table-results.csv"
# A SQL view with the same columns, typed (quote dotted names: "dbdict.status"). Create it again
# after new keys appear.
dbdict view create "${table}_results" --table "$table"
if [[ "$DBDICT_DB" == postgresql://* ]] && command -v psql >/dev/null; then
    psql "$DBDICT_DB" -c "SELECT lr, count(*) AS runs, avg(result) AS result
                          FROM ${table}_results WHERE \"dbdict.status\" = 'DONE'
                          GROUP BY lr ORDER BY lr"
fi
