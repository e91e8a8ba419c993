# Sourced by the scripts in Tools/: strict mode, `root` (the repository), the Swift toolchain
# on PATH, the Python helpers (Tools/pkmtools) on PYTHONPATH, kernel_object and kernel_harness.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/opt/swift/usr/bin:$PATH"
export PYTHONPATH="$root/Tools${PYTHONPATH:+:$PYTHONPATH}"

# kernel_object NAME OUT [CFLAGS...]: the gather kernel (Sources/CGatherKernel, or the copy in
# $kernel_dir) compiled into OUT with every function its header exports renamed from pkm_* to
# NAME_*, so that builds with different flags or sources link into one program.
kernel_object() {
    local name=$1 out=$2 kernel="${kernel_dir:-$root/Sources/CGatherKernel}" renames=() f
    shift 2
    for f in $(grep -oE '\bpkm_[a-z0-9_]+\(' "$kernel/include/gather_kernel.h" | tr -d '(' | sort -u); do
        renames+=("-D$f=${name}_${f#pkm_}")
    done
    clang -O2 "$@" "${renames[@]}" -I "$kernel/include" -c "$kernel/gather_kernel.c" -o "$out"
}

# kernel_harness NAME [LOG2_ROWS...]: Tools/NAME.c built with the gather kernel and run once for
# each table size (default 16 20 24), in a scratch directory removed when the script exits.
kernel_harness() {
    local name=$1 work e
    shift
    work=$(mktemp -d)
    trap "rm -rf '$work'" EXIT  # expanded now: `work` is gone when the script exits
    clang -O2 -I "$root/Sources/CGatherKernel/include" -o "$work/$name" "$root/Tools/$name.c" \
        "$root/Sources/CGatherKernel/gather_kernel.c" -lm
    for e in ${*:-16 20 24}; do "$work/$name" "$e"; done
}
