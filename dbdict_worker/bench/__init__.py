"""`dbdict-worker bench`: the queue, enqueue, export and end-to-end figures next to a baseline."""
