import Foundation
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// A value table as one uncompressed file of rows, memory-mapped or read into huge-page memory:
/// the baseline that store reads are measured against.
public final class FlatTable: @unchecked Sendable {
    // Invariant: the rows are read-only and live until deinit (the map's, or `memory`'s).
    public let rows: Int
    public let dim: Int
    public let elementType: ElementType
    /// Whether the rows were read into anonymous memory in huge pages instead of mapped.
    public var inMemory: Bool { memory != nil }
    private let base: UnsafeRawPointer
    private let length: Int
    private let memory: HugePageBuffer?

    /// Writes `bytes` (rows of `elementType`) to `path` (an ``OutputFile``) and maps it.
    public convenience init(path: String, bytes: [UInt8], dim: Int, elementType: ElementType) throws {
        do { try OutputFile.write(Data(bytes), to: path, durable: false) } catch { throw StoreError.invalidArgument(error.description) }
        try self.init(path: path, dim: dim, elementType: elementType)
    }

    /// Writes the store's rows, decoded, to `path` (an ``OutputFile``, one shard at a time) and maps the file (or reads it, `inMemory`).
    public convenience init(path: String, from store: Store, inMemory: Bool = false, largeFolios: Bool = false) throws {
        do {
            let out = try OutputFile(path: path, durable: false)  // a benchmark's scratch copy: no flush
            for s in 0..<store.layout.shardCount { try store.withShardRows(s) { try out.write($0) } }
            try out.finish()
        } catch let error as OutputFileError {
            throw StoreError.invalidArgument(error.description)
        }
        try self.init(path: path, dim: store.layout.dim, elementType: store.layout.elementType, inMemory: inMemory, largeFolios: largeFolios)
    }

    /// Maps an existing flat file of rows, or with `inMemory` reads it into anonymous memory in
    /// huge pages: the memory limit of a table that fits in memory, free of the page cache's
    /// page sizes (a file faulted in at random is mapped in 4 KiB pages, one TLB entry per row).
    /// With `largeFolios`, a mapped file is read into the page cache in 2 MiB folios first, and
    /// the map advised to fault in 2 MiB, so that it is mapped in 2 MiB pages as a store read
    /// whole is (``LargeFolioReader``; pages already cached keep their size).
    public init(path: String, dim: Int, elementType: ElementType, inMemory: Bool = false, largeFolios: Bool = false) throws {
        let fd = Foundation.open(path, O_RDONLY)
        guard fd >= 0 else { throw StoreError.invalidArgument("cannot open '\(path)'") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0 else { throw StoreError.invalidArgument("cannot read '\(path)'") }
        let size = Int(st.st_size)
        if inMemory {
            guard let buffer = HugePageBuffer(count: size) else { throw StoreError.invalidArgument("cannot allocate \(size) bytes for '\(path)'") }
            guard readFully(fd, into: buffer.base, count: size, at: 0) == size else { throw StoreError.invalidArgument("cannot read '\(path)'") }
            memory = buffer
            base = UnsafeRawPointer(buffer.base)
        } else {
            guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                throw StoreError.invalidArgument("cannot map '\(path)'")
            }
            if largeFolios {
                LargeFolioReader.adviseFolios(p, bytes: size)
                var reader = LargeFolioReader(descriptor: fd)
                reader.read(0, count: size)
            }
            memory = nil
            base = UnsafeRawPointer(p)
        }
        length = size
        self.dim = dim
        self.elementType = elementType
        rows = size / (dim * elementType.size)
    }

    deinit { if memory == nil { munmap(UnsafeMutableRawPointer(mutating: base), length) } }

    /// Row `index` converted to Float, with the same kernel the store uses.
    public func row(_ index: Int, into out: UnsafeMutablePointer<Float>) {
        elementType.convert(base + index * dim * elementType.size, count: dim, into: out)
    }

    /// Whether this table has `store`'s rows: as many, and equal at 64 rows spread over the
    /// table (the first and last among them), so that a flat copy kept from an earlier run, or a
    /// file named for one, is not taken for this store's.
    public func holdsRows(of store: Store) throws -> Bool {
        guard rows == store.layout.rows, dim == store.layout.dim, elementType == store.layout.elementType, rows > 0 else { return false }
        var mine = [Float](repeating: 0, count: dim)
        for k in 0..<64 {
            let r = k * (rows - 1) / 63
            mine.withUnsafeMutableBufferPointer { row(r, into: $0.baseAddress!) }
            guard zip(mine, try store.row(r)).allSatisfy({ $0.bitPattern == $1.bitPattern }) else { return false }
        }
        return true
    }

    /// Row `i` adds into output row `targets[i]` (its first `width` elements), with the kernel of
    /// `Store.gatherReduce` locating each row as a flat table's (`base + row × rowBytes`), in the
    /// order given and with no checks of the rows: the memory system's limit for this table. (The
    /// kernel still bounds the indices and targets; the benchmark's are in range.)
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int? = nil,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) {
        guard let w = weights.baseAddress, let out = output.baseAddress, !indices.isEmpty else { return }
        let map = RowKernels.flatMap(base: base, rowBytes: dim * elementType.size, rows: rows), group = min(indices.count, Store.rawGroupRows)
        let located = UnsafeMutableBufferPointer<UnsafeRawPointer?>.allocate(capacity: group)
        let unchecked = UnsafeMutableBufferPointer<Int>.allocate(capacity: group)
        defer { located.deallocate(); unchecked.deallocate() }
        var start = 0
        while start < indices.count {
            let n = min(group, indices.count - start)
            _ = RowKernels.gatherReduce(UnsafeBufferPointer(rebasing: indices[start..<(start + n)]), map: map, type: elementType,
                                        dim: width ?? dim, chunks: chunks, weights: w + start * chunks,
                                        targets: targets.baseAddress.map { $0 + start }, into: out, outputs: output.count / (width ?? dim),
                                        rows: located.baseAddress!, unchecked: unchecked.baseAddress!)
            start += n
        }
    }

    /// The gate dots of `Store.gatherDots` over this table, with no checks.
    public func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                           queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) {
        guard let u = inputs.baseAddress, let q = queries.baseAddress, let out = scores.baseAddress else { return }
        forEachGroup(indices) { rows, start in
            RowKernels.gatherDots(rows, positions: nil, type: elementType, column: column, width: width, rowBytes: dim * elementType.size,
                                  inputs: u, queries: q + start, into: out + start)
        }
    }

    /// The rows at `indices` as pointers, in groups of `Store.rawGroupRows` (the group and its first position).
    private func forEachGroup(_ indices: UnsafeBufferPointer<Int>, _ body: (UnsafeBufferPointer<UnsafeRawPointer?>, Int) -> Void) {
        guard !indices.isEmpty else { return }
        let rowBytes = dim * elementType.size, group = min(indices.count, Store.rawGroupRows)
        let rows = UnsafeMutableBufferPointer<UnsafeRawPointer?>.allocate(capacity: group)
        defer { rows.deallocate() }
        var start = 0
        while start < indices.count {
            let n = min(group, indices.count - start)
            for k in 0..<n { rows[k] = base + indices[start + k] * rowBytes }
            body(UnsafeBufferPointer(rebasing: rows[0..<n]), start)
            start += n
        }
    }
}

/// A flat, uncompressed copy of the value table as a row source: the upper bound the store's
/// lookup-reduce is measured against.
public struct FlatRows: ValueRows {
    public let table: FlatTable
    public init(_ table: FlatTable) { self.table = table }
    public var dim: Int { table.dim }
    public var rows: Int { table.rows }

    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        table.gatherReduce(indices: indices, weights: weights, chunks: chunks, width: width, targets: targets, into: output)
    }

    public func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                           queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) throws {
        table.gatherDots(indices: indices, column: column, width: width, inputs: inputs, queries: queries, into: scores)
    }
}
