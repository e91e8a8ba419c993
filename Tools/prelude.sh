# Sourced by the scripts in Tools/: strict mode, `root` (the repository), the Swift toolchain
# on PATH, the Python helpers (Tools/pkmtools) on PYTHONPATH, and kernel_object.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/opt/swift/usr/bin:$PATH"
export PYTHONPATH="$root/Tools${PYTHONPATH:+:$PYTHONPATH}"

# kernel_object NAME OUT [CFLAGS...]: the gather kernel (Sources/CGatherKernel) compiled into OUT
# with every function its header exports renamed from pkm_* to NAME_*, so that builds with
# different flags link into one program.
kernel_object() {
    local name=$1 out=$2 kernel="$root/Sources/CGatherKernel" renames=() f
    shift 2
    for f in $(grep -oE '\bpkm_[a-z0-9_]+\(' "$kernel/include/gather_kernel.h" | tr -d '(' | sort -u); do
        renames+=("-D$f=${name}_${f#pkm_}")
    done
    clang -O2 "$@" "${renames[@]}" -I "$kernel/include" -c "$kernel/gather_kernel.c" -o "$out"
}
