import CGatherKernel

/// XXH64, the 64-bit xxHash digest of Spec/FORMAT.md "Checksums": the C implementation the row
/// checks run (`pkm_xxh64`, Sources/CGatherKernel/row_check.c), for every checksum and seal the
/// store writes or reads, so that one implementation serves both.
package enum XXH64 {
    /// The digest of `bytes` with `seed`.
    package static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        guard let base = bytes.baseAddress else { return withUnsafeBytes(of: 0) { pkm_xxh64($0.baseAddress, 0, seed) } }
        return pkm_xxh64(base, bytes.count, seed)
    }
}
