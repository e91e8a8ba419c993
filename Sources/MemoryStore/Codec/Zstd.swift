import CZstd

/// The name zstd gives an error code.
func zstdErrorName(_ code: Int) -> String { String(cString: ZSTD_getErrorName(code)) }

/// A trained zstd dictionary, digested once for compression and decompression.
/// CDict and DDict are read-only after creation and safe to share between threads.
final class ZstdDictionary: @unchecked Sendable {
    let bytes: [UInt8]
    let cdict: OpaquePointer?
    let ddict: OpaquePointer

    init(bytes: [UInt8], level: Int32) throws {
        self.bytes = bytes
        guard let d = bytes.withUnsafeBytes({ ZSTD_createDDict($0.baseAddress, $0.count) }) else {
            throw StoreError.codec("the stored zstd dictionary is not valid")
        }
        ddict = d
        cdict = bytes.withUnsafeBytes { ZSTD_createCDict($0.baseAddress, $0.count, level) }
    }

    deinit {
        ZSTD_freeDDict(ddict)
        if let cdict { ZSTD_freeCDict(cdict) }
    }

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
final class ZstdCompressor {
    private let cctx: OpaquePointer
    private let level: Int32
    private let dictionary: ZstdDictionary?

    init(level: Int, dictionary: ZstdDictionary?) {
        cctx = ZSTD_createCCtx()
        self.level = Int32(level)
        self.dictionary = dictionary
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)  // the shard checksum covers the data
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
    }

    deinit { ZSTD_freeCCtx(cctx) }

    /// Compresses `source` into `destination`; returns the frame size, or nil when it would not fit.
    func compress(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        let n: Int
        if let cdict = dictionary?.cdict {
            n = ZSTD_compress_usingCDict(cctx, destination.baseAddress, destination.count, source.baseAddress, source.count, cdict)
        } else {
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
            n = ZSTD_compress2(cctx, destination.baseAddress, destination.count, source.baseAddress, source.count)
        }
        return ZSTD_isError(n) != 0 ? nil : n
    }
}

/// One decompression context; not thread-safe, so each reader context owns one.
final class ZstdDecompressor {
    private let dctx: OpaquePointer

    init() { dctx = ZSTD_createDCtx() }
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
