#!/usr/bin/env bash
# One dbdict worker inside an HTCondor slot (the executable of dbdict-worker.sub).
#
# It turns the slot's allocation into worker options and then exec's the worker, so that the
# worker itself is the job's process: HTCondor's soft kill (SIGTERM) reaches it directly, and
# it forwards the stop to its experiments. (A shell that waited for a child would only act on
# the signal after the child exited, and the hard kill would come first.)
#
#   --gpus        HTCondor's assigned GPUs (one experiment per GPU), unless DBDICT_GPUS is set
#   --slots       the slot's CPUs when there is no GPU, unless DBDICT_SLOTS is set
#   --workdir-base  the job's local scratch directory, unless DBDICT_WORKDIR_BASE is set
# Arguments given to this script (the submit file's `arguments`) are passed on last, so they
# win.
set -euo pipefail

die() {
    echo "dbdict-worker.sh: $*" >&2
    exit 2
}

# True if a database URL carries a password (scheme://user:password@host/...).
url_has_password() {
    local rest="${1#*://}"
    rest="${rest%%/*}"
    [[ "$rest" == *@* ]] || return 1
    [[ "${rest%@*}" == *:* ]]
}

[[ -n "${DBDICT_DB:-}" ]] \
    || die "DBDICT_DB is not set: export it (postgresql://user@host/db) before condor_submit"
if url_has_password "$DBDICT_DB"; then
    die "DBDICT_DB contains a password; it is now in this job's ClassAd (condor_q -l): change" \
        "that password, and give the new one through ~/.pgpass or PGPASSFILE instead"
fi
if [[ -z "${DBDICT_EXPROOT:-}" ]]; then
    echo "dbdict-worker.sh: warning: no DBDICT_EXPROOT: job directories stay in this job's" \
         "scratch directory and are deleted with it" >&2
fi

# The worker from the submitting shell's venv if there was one, else from PATH.
worker=dbdict-worker
if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/dbdict-worker" ]]; then
    worker="$VIRTUAL_ENV/bin/dbdict-worker"
fi
command -v "$worker" >/dev/null \
    || die "dbdict-worker not found: submit from a shell where it runs (venv active)"

# The number of CPUs this slot was given (RequestCpus in the job ad), 1 if unknown.
slot_cpus() {
    local n=""
    if [[ -n "${_CONDOR_JOB_AD:-}" && -r "$_CONDOR_JOB_AD" ]]; then
        n=$(sed -n 's/^RequestCpus = \([0-9][0-9]*\)$/\1/p' "$_CONDOR_JOB_AD" | head -n 1)
    fi
    echo "${n:-1}"
}

args=()
cpus=$(slot_cpus)
slots=""
if [[ -z "${DBDICT_GPUS:-}" && -n "${_CONDOR_AssignedGPUs:-}" ]]; then
    # HTCondor sets CUDA_VISIBLE_DEVICES from AssignedGPUs (indices, or GPU-<uuid> prefixes,
    # both of which CUDA accepts). Each experiment gets one of them.
    gpus="${CUDA_VISIBLE_DEVICES:-}"
    if [[ -z "$gpus" ]]; then
        gpus="${_CONDOR_AssignedGPUs//CUDA/}"     # old style: CUDA0,CUDA1 -> 0,1
    fi
    gpus="${gpus// /}"
    args+=(--gpus "$gpus")
    IFS=, read -r -a gpu_list <<<"$gpus"
    slots=${#gpu_list[@]}
elif [[ -n "${DBDICT_GPUS:-}" ]]; then
    IFS=, read -r -a gpu_list <<<"$DBDICT_GPUS"
    slots=${#gpu_list[@]}
elif [[ -z "${DBDICT_SLOTS:-}" ]]; then
    args+=(--slots "$cpus")
    slots=$cpus
else
    slots=$DBDICT_SLOTS
fi

# HTCondor sets OMP_NUM_THREADS (and friends) to the slot's CPU count. With several experiments
# in the slot each would start that many threads; share the CPUs out instead.
if [[ "$slots" =~ ^[0-9]+$ ]] && ((slots > 0)); then
    threads=$((cpus / slots))
    ((threads >= 1)) || threads=1
    export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
fi

if [[ -z "${DBDICT_WORKDIR_BASE:-}" ]]; then
    scratch="${_CONDOR_SCRATCH_DIR:-${TMPDIR:-/tmp}}"
    args+=(--workdir-base "$scratch/dbdict-work")
fi

# ${args[@]+"${args[@]}"}: an empty array under `set -u` is an error in bash < 4.4 (EL7).
echo "dbdict-worker.sh: $(hostname): exec $worker start ${args[*]+${args[*]}} $*" >&2
exec "$worker" start ${args[@]+"${args[@]}"} "$@"
