"""Helpers the tests share: waiting on conditions, programs a test needs, private servers."""
