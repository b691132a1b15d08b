"""Data stages: sources (download), image normalisation (preprocess), manifests (label)."""
