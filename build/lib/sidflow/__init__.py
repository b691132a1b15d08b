"""sidflow: synthetic image detection as a reproducible Snakemake pipeline.

Run the demo with ``snakemake --profile profiles/local`` from the repository root;
see README.md. Everything the rules do lives in this package so it can be imported
and unit-tested.

``__version__`` is the one version source (pyproject.toml reads it); :func:`code_version`
adds a content hash of the package's source, so provenance recorded in caches and model
cards changes whenever the code does.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.2.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<__version__>+<12 hex digits of sha256 over every .py file of the package>``."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
