import CKeyScoring
import COpenBLAS
import Foundation

/// Which of OpenBLAS's kernels run the search's matrix products.
///
/// OpenBLAS picks them by CPU model when it loads. Version 0.3.21 (Debian 12) does not know
/// recent models (an Emerald Rapids Xeon, family 6 model 207) and falls back to its SSE3
/// kernels, "Prescott": on that host searches of 256 queries over 2^24 rows ran at 7.8-8.1 k
/// queries/s, against 12.7-13.1 k with its AVX2 kernels and 14.6-15.5 k with its AVX-512 ones
/// (BENCHMARKS.md, seventh session).
/// The choice cannot change once loaded, only through `OPENBLAS_CORETYPE` at a process's start.
public enum BLASKernels {
    /// The kernels OpenBLAS runs ("Prescott", "Haswell", "SkylakeX", ...).
    public static var loaded: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// The `OPENBLAS_CORETYPE` a process should start again with, or nil: set when OpenBLAS fell
    /// back to its SSE3 kernels on a CPU that runs its AVX2 or AVX-512 ones and no one chose.
    public static var restartWith: String? {
        guard ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil, loaded.lowercased() == "prescott",
              let core = pkm_blas_core_for_cpu() else { return nil }
        return String(cString: core)
    }
}
