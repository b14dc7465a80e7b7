-- Releasing a booked job: queue.release_statements(dialect, requeue, with_workdir),
-- sent by queue.release_owned. The owner's condition comes from queue.owned.
-- Compiled for postgresql, parameters by name, by tests/unit/test_golden_sql.py;
-- DBDICT_UPDATE_GOLDEN=1 rewrites this file.

-- Finish: a final status (DONE, ERR_RUN...), with the job's workdir:
WITH released AS
(UPDATE jobs SET status=%(new_status)s, updated_at=now(), heartbeat_at=now(), finished_at=now(), workdir=%(new_workdir)s, error=%(new_error)s WHERE jobs.id = %(own_id)s AND jobs.attempts = %(own_attempt)s AND jobs.worker_id = %(own_worker)s AND jobs.status = %(status_1)s RETURNING jobs.id)
 INSERT INTO events (job_id, kind, worker_id, detail) SELECT released.id, %(event_kind)s AS anon_1, %(own_worker)s AS anon_2, %(event_detail)s AS anon_3
FROM released RETURNING events.job_id;

-- Requeue: back to START at a priority, with the job's workdir:
WITH released AS
(UPDATE jobs SET status=%(new_status)s, priority=%(new_priority)s, updated_at=now(), heartbeat_at=now(), worker_id=NULL, workdir=%(new_workdir)s, error=%(new_error)s, not_before=CASE WHEN (%(new_delay)s > 0) THEN (now() + make_interval(secs => %(new_delay)s)) ELSE NULL END, restarts=coalesce(%(new_restarts)s, jobs.restarts), retried=coalesce(%(new_retried)s, jobs.retried), prune_requested=false WHERE jobs.id = %(own_id)s AND jobs.attempts = %(own_attempt)s AND jobs.worker_id = %(own_worker)s AND jobs.status = %(status_1)s RETURNING jobs.id)
 INSERT INTO events (job_id, kind, worker_id, detail) SELECT released.id, %(event_kind)s AS anon_1, %(own_worker)s AS anon_2, %(event_detail)s AS anon_3
FROM released RETURNING events.job_id;

-- Finish many (queue.finish_owned_many: one statement for a batch on PostgreSQL,
-- the release above once per job on SQLite):
WITH released AS
(UPDATE jobs SET status=given.status, updated_at=now(), heartbeat_at=now(), finished_at=now(), workdir=coalesce(given.workdir, jobs.workdir), error=given.error FROM unnest(%(given_ids)s::BIGINT[], %(given_attempts)s::INTEGER[], %(given_statuses)s::INTEGER[], %(given_errors)s::TEXT[], %(given_workdirs)s::TEXT[], %(given_details)s::TEXT[]) AS given(id, attempt, status, error, workdir, detail) WHERE jobs.id = given.id AND jobs.attempts = given.attempt AND jobs.worker_id = %(own_worker)s AND jobs.status = %(status_1)s RETURNING jobs.id, given.detail)
 INSERT INTO events (job_id, kind, worker_id, detail) SELECT released.id, %(param_1)s AS anon_1, %(own_worker)s AS anon_2, released.detail
FROM released RETURNING events.job_id;
