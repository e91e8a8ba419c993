# Sourced by the scripts in Tools/: strict mode, `root` (the repository), the Swift toolchain
# on PATH and the Python helpers (Tools/pkmtools) on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/opt/swift/usr/bin:$PATH"
export PYTHONPATH="$root/Tools${PYTHONPATH:+:$PYTHONPATH}"
