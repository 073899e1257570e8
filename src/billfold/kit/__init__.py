"""Shared building blocks: clock, errors, ids, database, money-safe helpers."""
