#!/usr/bin/env bash
# GPU check in one command, on a machine with a CUDA GPU (README: "GPU check"). Installs the wheels
# that `python benchmarks/device_check.py --fetch-wheels` put in .whl/ (keras, hydra-core, ...) into a
# folder of their own, puts it on PYTHONPATH, then runs benchmarks/device_check.py, which writes
# device_check.json (the summary) and device_check.log into $OUT (the device tool's folder), else
# into outputs/device-check/. Arguments go to device_check.py (--device cpu --quick: a CPU dry run).
#   bash benchmarks/device_check.sh
#   PYTHON=/path/to/python bash benchmarks/device_check.sh --device cpu --quick
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
site="${KVP_WHEEL_SITE:-/tmp/kvp-device-check-site}"
shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]})); then
  t0=$SECONDS
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "device_check.sh: ${#wheels[@]} wheels from .whl/ installed into $site in $((SECONDS - t0)) s"
else
  echo "device_check.sh: no .whl/*.whl here; using the packages already installed" >&2
fi
export PYTHONUNBUFFERED=1
out="${OUT:-outputs/device-check}"
exec "$py" benchmarks/device_check.py --out "$out" "$@"
