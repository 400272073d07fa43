"""Importable helpers for tests that run paintbench in subprocesses (generators, plugins)."""
