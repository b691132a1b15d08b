"""Frozen backbones + classical classifiers: the probe grid (see docs/architecture.md)."""
