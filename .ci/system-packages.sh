#!/usr/bin/env bash
# Debian packages the integration tests use: chromium + chromium-driver (the browser tests,
# driven by selenium) and a
# single-node SLURM (slurm-wlm = slurmctld + slurmd + client, munge) for tests/test_slurm.py.
# Installs what is missing; without apt-get (or root) it says so and those tests skip
# (under CI=true they fail instead). Part of the README's test command.
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
{ command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; } || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "cannot install ${need[*]} (needs apt-get as root): the tests that use them skip"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } \
  || echo "could not install ${need[*]}: the tests that use them skip"
exit 0
