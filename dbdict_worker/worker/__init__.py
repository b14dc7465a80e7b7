"""The worker daemon: the booking loop, its writes, rescue of lost jobs, wake-ups."""
