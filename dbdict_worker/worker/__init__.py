"""The worker daemon: the booking loop (supervisor), its writes and the database's health
(writes), rescue of lost jobs (rescue), what it needs and what it reports (ports, events)
and systemd's notifications (sdnotify). The LISTEN connection that wakes it is
:mod:`dbdict_worker.db.listen`."""
