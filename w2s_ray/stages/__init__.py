"""Shared stages: each a function that builds (or reuses) one content-addressed artifact."""
