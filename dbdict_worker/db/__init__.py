"""Everything that speaks SQL; nothing outside this subpackage builds SQL or imports a driver.

- :mod:`.schema`: the tables, as SQLAlchemy metadata (the migrations in ``migrations/`` build
  exactly this); :mod:`.migrate` runs them.
- :mod:`.connect`: URLs, engines, which failures to retry, and the retrier.
- :mod:`.models`: the frozen types every query returns (Job, Token, Booking, Selection...).
- :mod:`.values`: how one state value is stored as (vtype, num, txt) and read back.
- :mod:`.queue`: the queue core, PostgreSQL and SQLite side by side: enqueue, booking, saves,
  releases, heartbeats and the lease, all fenced by one ownership condition (``owned``).
- :mod:`.selection`: a Selection as WHERE conditions; :mod:`.queries`: the reads (list, show,
  counts, history) and the changes a user asks for (cancel, requeue, priority, delete).
- :mod:`.views`: the flat SQL view and the server-side CSV export.
- :mod:`.workers`: the worker registry and the wake-up notifications (NOTIFY);
  :mod:`.listen`: the LISTEN connection that wakes an idle worker.
- :mod:`.maintenance` and :mod:`.baselines`: what the bench runs (clean-up, VACUUM, the
  booking's plan) and measures the library against (a minimal queue, bare COPY).

Query functions take a connection inside the caller's transaction and never commit.
"""
