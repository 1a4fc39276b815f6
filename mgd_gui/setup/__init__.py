"""Experiment set-up: the schema-driven form and the widgets around it."""
