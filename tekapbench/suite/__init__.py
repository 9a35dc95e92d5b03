"""Declarative suites: the typed schema and the expansion into runs."""
