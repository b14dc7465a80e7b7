-- Booking: queue.booking_statements(dialect, with_tables), sent by queue.book.
-- __[POSTCOMPILE_table_ids] is sent as one parameter per table id; a worker that
-- books from any table sends the same without that condition.
-- Compiled for postgresql, parameters by name, by tests/unit/test_golden_sql.py;
-- DBDICT_UPDATE_GOLDEN=1 rewrites this file.

-- Tables given (a worker started with --table):
WITH picked AS
(SELECT jobs.id AS id
FROM jobs
WHERE jobs.status = %(status_1)s AND (jobs.not_before IS NULL OR jobs.not_before <= now()) AND jobs.table_id IN (__[POSTCOMPILE_table_ids]) ORDER BY jobs.priority DESC, jobs.id
 LIMIT %(n)s FOR UPDATE SKIP LOCKED),
booked AS
(UPDATE jobs SET status=%(param_2)s, attempts=(jobs.attempts + %(attempts_1)s), updated_at=now(), booked_at=now(), heartbeat_at=now(), finished_at=NULL, worker_id=%(new_worker)s, host=%(new_host)s, error=NULL, not_before=NULL, run_info=%(new_run_info)s FROM picked WHERE jobs.id = picked.id RETURNING jobs.id, jobs.table_id, jobs.experiment, jobs.status, jobs.priority, jobs.attempts, jobs.losses, jobs.max_attempts, jobs.params_hash, jobs.replica, jobs.dedup, jobs.created_at, jobs.updated_at, jobs.booked_at, jobs.heartbeat_at, jobs.finished_at, jobs.worker_id, jobs.host, jobs.workdir, jobs.error, jobs.not_before, jobs.restarts, jobs.max_restarts, jobs.retries, jobs.retried, jobs.retry_on, jobs.retry_delay, jobs.timeout, jobs.stall_after, jobs.submission_id, jobs.run_info, jobs.search_id, jobs.trial, jobs.prune_requested),
logged AS
(INSERT INTO events (job_id, kind, worker_id, detail) SELECT booked.id AS id, %(param_1)s AS anon_1, %(new_worker)s AS anon_2, %(new_host)s AS anon_3
FROM booked)
 SELECT booked.id, job_tables.name, booked.experiment, booked.status, booked.priority, booked.attempts, booked.losses, booked.max_attempts, booked.replica, booked.created_at, booked.updated_at, booked.booked_at, booked.heartbeat_at, booked.finished_at, booked.worker_id, booked.host, booked.workdir, booked.error, booked.restarts, booked.max_restarts, booked.not_before, booked.retries, booked.retried, booked.retry_on, booked.retry_delay, booked.timeout, booked.stall_after, booked.submission_id, booked.run_info, booked.search_id, booked.trial, booked.prune_requested, (SELECT json_agg(json_build_array(s.key, s.vtype, s.txt)) AS json_agg_1
FROM state AS s
WHERE s.job_id = booked.id) AS anon_4
FROM booked JOIN job_tables ON job_tables.id = booked.table_id;
