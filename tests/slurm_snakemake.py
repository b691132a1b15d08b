"""``python tests/slurm_snakemake.py ARGS`` = ``python -m snakemake ARGS`` with the SLURM
executor polling the local test cluster every second.

The plugin backs off by 10 s after every status round in which no job finished (up to 180 s:
kind to a shared cluster's scheduler); on the one-node test cluster each dependency level then
waits ~11 s for nothing. Only the test harness changes that; the profile and the plugin's
behaviour on a real cluster stay as they are.
"""

import sys

import snakemake_executor_plugin_slurm as slurm

_check = slurm.Executor.check_active_jobs


async def _check_every_second(self, active_jobs):
    async for job in _check(self, active_jobs):
        yield job
    self.next_seconds_between_status_checks = 1


slurm.Executor.check_active_jobs = _check_every_second

if __name__ == "__main__":
    from snakemake.cli import main

    sys.exit(main())
