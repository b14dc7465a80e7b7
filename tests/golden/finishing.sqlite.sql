-- Releasing a booked job: queue.release_statements(dialect, requeue, with_workdir),
-- sent by queue.release_owned. The owner's condition comes from queue.owned.
-- Compiled for sqlite, parameters by name, by tests/unit/test_golden_sql.py;
-- DBDICT_UPDATE_GOLDEN=1 rewrites this file.

-- Finish: a final status (DONE, ERR_RUN...), with the job's workdir:
UPDATE jobs SET status=:new_status, updated_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), heartbeat_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), finished_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), workdir=:new_workdir, error=:new_error WHERE jobs.id = :own_id AND jobs.attempts = :own_attempt AND jobs.worker_id = :own_worker AND jobs.status = :status_1;
INSERT INTO events (job_id, kind, worker_id, detail) VALUES (:own_id, :event_kind, :own_worker, :event_detail);

-- Requeue: back to START at a priority, with the job's workdir:
UPDATE jobs SET status=:new_status, priority=:new_priority, updated_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), heartbeat_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), worker_id=NULL, workdir=:new_workdir, error=:new_error, not_before=CASE WHEN (:new_delay > 0) THEN strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('+%f seconds', :new_delay)) ELSE NULL END, restarts=coalesce(:new_restarts, jobs.restarts), retried=coalesce(:new_retried, jobs.retried), prune_requested=0 WHERE jobs.id = :own_id AND jobs.attempts = :own_attempt AND jobs.worker_id = :own_worker AND jobs.status = :status_1;
INSERT INTO events (job_id, kind, worker_id, detail) VALUES (:own_id, :event_kind, :own_worker, :event_detail);

-- Finish many (queue.finish_owned_many: one statement for a batch on PostgreSQL,
-- the release above once per job on SQLite):
UPDATE jobs SET status=:new_status, updated_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), heartbeat_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), finished_at=strftime('%Y-%m-%d %H:%M:%f000', 'now'), workdir=:new_workdir, error=:new_error WHERE jobs.id = :own_id AND jobs.attempts = :own_attempt AND jobs.worker_id = :own_worker AND jobs.status = :status_1;
INSERT INTO events (job_id, kind, worker_id, detail) VALUES (:own_id, :event_kind, :own_worker, :event_detail);

-- Finish many and book (queue.finish_and_book, PostgreSQL; on SQLite the two above):
