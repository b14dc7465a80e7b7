"""Everything that speaks SQL: the tables (schema), the named queries, connections and retries.

Nothing outside this subpackage builds SQL. Query functions in :mod:`.queries` take a
connection, never commit, and return frozen dataclasses.
"""
