#!/usr/bin/env bash
# Debian packages the test suite uses: shellcheck (launch scripts), Slurm + munge (a real
# single-host Slurm), Chromium (report rendering). Installs only what is missing; needs root.
set -euo pipefail
need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or install them (tests that need them skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
