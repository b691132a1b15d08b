"""sidflow: synthetic image detection as a reproducible Snakemake pipeline.

Run the demo with ``snakemake --profile profiles/local`` from the repository root;
see README.md. Everything the rules do lives in this package so it can be imported
and unit-tested.
"""

__version__ = "0.1.0"
