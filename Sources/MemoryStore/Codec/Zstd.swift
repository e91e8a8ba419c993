import CZstd

/// The name zstd gives an error code.
func zstdErrorName(_ code: Int) -> String { String(cString: ZSTD_getErrorName(code)) }

/// A trained zstd dictionary, digested once for decompression.
/// A DDict is read-only after creation and safe to share between threads.
package final class ZstdDictionary: @unchecked Sendable {
    let bytes: [UInt8]
    let ddict: OpaquePointer

    init(bytes: [UInt8]) throws {
        self.bytes = bytes
        guard let d = bytes.withUnsafeBytes({ ZSTD_createDDict($0.baseAddress, $0.count) }) else {
            throw StoreError.codec("the stored zstd dictionary is not valid")
        }
        ddict = d
    }

    deinit { ZSTD_freeDDict(ddict) }

    /// Trains a dictionary of at most `capacity` bytes from sample buffers.
    static func train(samples: [[UInt8]], capacity: Int) throws -> [UInt8] {
        let joined = samples.flatMap { $0 }
        let sizes = samples.map { $0.count }
        var dict = [UInt8](repeating: 0, count: capacity)
        let n = dict.withUnsafeMutableBytes { d in
            joined.withUnsafeBytes { s in
                ZDICT_trainFromBuffer(d.baseAddress, capacity, s.baseAddress, sizes, UInt32(sizes.count))
            }
        }
        if ZDICT_isError(n) != 0 {
            throw StoreError.codec("dictionary training failed: \(String(cString: ZDICT_getErrorName(n)))")
        }
        return Array(dict.prefix(n))
    }
}

/// One compression context; not thread-safe, so each worker owns one.
package final class ZstdCompressor {
    private let cctx: OpaquePointer
    /// Whether frames are compressed with a dictionary (flag bit 0 of the shard header).
    let usesDictionary: Bool

    package init(level: Int, dictionary: ZstdDictionary?) {
        cctx = ZSTD_createCCtx()
        usesDictionary = dictionary != nil
        if let dictionary {
            // Loaded into the context (not a CDict) so that the parameters below apply with it too.
            dictionary.bytes.withUnsafeBytes { _ = ZSTD_CCtx_loadDictionary(cctx, $0.baseAddress, $0.count) }
        }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)  // the shard checksum covers the data
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level))
        if level <= 15 {
            // Byte planes of floats hold almost no repeats: short random matches cost more than
            // they save. Tiny match tables and 7-byte minimum matches leave zstd to entropy-code
            // literals, which on Gaussian bf16 exponents gives 0.33x instead of 0.40x at level 3,
            // and decodes faster (Spec/FORMAT.md, "Codec parameters").
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, Int32(ZSTD_dfast.rawValue))
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 17)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 6)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, 6)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_searchLog, 1)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_targetLength, 16)
        }
    }

    deinit { ZSTD_freeCCtx(cctx) }

    /// Compresses `source` into `destination`; returns the frame size, or nil when it would not fit.
    func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let n = ZSTD_compress2(cctx, destination.baseAddress, destination.count, source.baseAddress, source.count)
        return ZSTD_isError(n) != 0 ? nil : n
    }
}

/// One decompression context; not thread-safe, so each reader context owns one.
package final class ZstdDecompressor {
    private let dctx: OpaquePointer

    package init() { dctx = ZSTD_createDCtx() }
    deinit { ZSTD_freeDCtx(dctx) }

    /// Decompresses one frame that must expand to exactly `destination.count` bytes.
    func decompress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
                    dictionary: ZstdDictionary?) throws {
        let n: Int
        if let dictionary {
            n = ZSTD_decompress_usingDDict(dctx, destination.baseAddress, destination.count, source.baseAddress, source.count, dictionary.ddict)
        } else {
            n = ZSTD_decompressDCtx(dctx, destination.baseAddress, destination.count, source.baseAddress, source.count)
        }
        if ZSTD_isError(n) != 0 { throw StoreError.codec("zstd: \(zstdErrorName(n))") }
        if n != destination.count { throw StoreError.codec("zstd frame holds \(n) bytes, expected \(destination.count)") }
    }

    static func bound(_ size: Int) -> Int { ZSTD_compressBound(size) }
}
