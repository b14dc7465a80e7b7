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

-- Finish many and book (queue.finish_and_book, PostgreSQL; on SQLite the two above):
WITH picked AS
(SELECT jobs.id AS id
FROM jobs
WHERE jobs.status = %(status_1)s AND (jobs.not_before IS NULL OR jobs.not_before <= now()) AND jobs.table_id IN (__[POSTCOMPILE_table_ids]) ORDER BY jobs.priority DESC, jobs.id
 LIMIT %(n)s FOR UPDATE SKIP LOCKED),
booked AS
(UPDATE jobs SET status=%(param_2)s, attempts=(jobs.attempts + %(attempts_1)s), updated_at=now(), booked_at=now(), heartbeat_at=now(), finished_at=NULL, worker_id=%(new_worker)s, host=%(new_host)s, error=NULL, not_before=NULL, run_info=%(new_run_info)s FROM picked WHERE jobs.id = picked.id RETURNING jobs.id, jobs.table_id, jobs.experiment, jobs.status, jobs.priority, jobs.attempts, jobs.losses, jobs.max_attempts, jobs.params_hash, jobs.replica, jobs.dedup, jobs.created_at, jobs.updated_at, jobs.booked_at, jobs.heartbeat_at, jobs.finished_at, jobs.worker_id, jobs.host, jobs.workdir, jobs.error, jobs.not_before, jobs.restarts, jobs.max_restarts, jobs.retries, jobs.retried, jobs.retry_on, jobs.retry_delay, jobs.timeout, jobs.stall_after, jobs.submission_id, jobs.run_info, jobs.search_id, jobs.trial, jobs.prune_requested),
logged AS
(INSERT INTO events (job_id, kind, worker_id, detail) SELECT booked.id AS id, %(param_1)s AS anon_1, %(new_worker)s AS anon_2, %(new_host)s AS anon_3
FROM booked),
released AS
(UPDATE jobs SET status=given.status, updated_at=now(), heartbeat_at=now(), finished_at=now(), workdir=coalesce(given.workdir, jobs.workdir), error=given.error FROM unnest(%(given_ids)s::BIGINT[], %(given_attempts)s::INTEGER[], %(given_statuses)s::INTEGER[], %(given_errors)s::TEXT[], %(given_workdirs)s::TEXT[], %(given_details)s::TEXT[]) AS given(id, attempt, status, error, workdir, detail) WHERE jobs.id = given.id AND jobs.attempts = given.attempt AND jobs.worker_id = %(own_worker)s AND jobs.status = %(status_2)s RETURNING jobs.id, given.detail),
ended AS
(INSERT INTO events (job_id, kind, worker_id, detail) SELECT released.id AS id, %(param_3)s AS anon_5, %(own_worker)s AS anon_6, released.detail AS detail
FROM released RETURNING events.job_id),
written AS
(SELECT array_agg(ended.job_id) AS written
FROM ended)
 SELECT written.written, booked.id, job_tables.name, booked.experiment, booked.status, booked.priority, booked.attempts, booked.losses, booked.max_attempts, booked.replica, booked.created_at, booked.updated_at, booked.booked_at, booked.heartbeat_at, booked.finished_at, booked.worker_id, booked.host, booked.workdir, booked.error, booked.restarts, booked.max_restarts, booked.not_before, booked.retries, booked.retried, booked.retry_on, booked.retry_delay, booked.timeout, booked.stall_after, booked.submission_id, booked.run_info, booked.search_id, booked.trial, booked.prune_requested, (SELECT json_agg(json_build_array(s.key, s.vtype, s.txt)) AS json_agg_1
FROM state AS s
WHERE s.job_id = booked.id) AS anon_4
FROM written LEFT OUTER JOIN (booked JOIN job_tables ON job_tables.id = booked.table_id) ON true;
