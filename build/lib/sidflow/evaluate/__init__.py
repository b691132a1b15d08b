"""Scores tables, metrics per generator and pooled."""
