-- Booking: queue.booking_statements(dialect, with_tables), sent by queue.book.
-- __[POSTCOMPILE_table_ids] is sent as one parameter per table id; a worker that
-- books from any table sends the same without that condition.
-- Compiled for sqlite, parameters by name, by tests/unit/test_golden_sql.py;
-- DBDICT_UPDATE_GOLDEN=1 rewrites this file.

-- Tables given (a worker started with --table):
UPDATE jobs SET status=:status, attempts=(jobs.attempts + :attempts_1), updated_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), booked_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), heartbeat_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), finished_at=NULL, worker_id=:new_worker, host=:new_host, error=NULL, not_before=NULL, run_info=:new_run_info WHERE jobs.id IN (SELECT jobs.id
FROM jobs
WHERE jobs.status = :status_1 AND (jobs.not_before IS NULL OR jobs.not_before <= strftime('%Y-%m-%d %H:%M:%f000', 'now')) AND jobs.table_id IN (__[POSTCOMPILE_table_ids]) ORDER BY jobs.priority DESC, jobs.id
 LIMIT :n OFFSET :param_1) RETURNING id;
INSERT INTO events (job_id, kind, worker_id, detail) VALUES (:booked_id, :kind, :new_worker, :new_host);
