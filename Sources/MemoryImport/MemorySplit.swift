import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// A store's value table cut into part stores, for serving it from several processes or
/// machines (Spec/DISTRIBUTED.md): a directory of `part-K.pkm` stores and `split.json`.
public enum MemorySplit {
    /// The file naming the whole in a split's directory.
    public static let manifestName = "split.json"

    /// `split.json`: the table, its layers, and where each part is.
    public struct Manifest: Codable, Sendable, Equatable {
        public struct Entry: Codable, Sendable, Equatable {
            /// The part store's file name inside the split's directory.
            public var file: String
            public var first: Int
            public var count: Int
        }
        public static let formatName = "pkm-split", currentVersion = 1
        public var format: String
        public var version: Int
        public var split: String
        public var axis: TablePart.Axis
        public var tableRows: Int
        public var tableDim: Int
        public var elementType: String
        public var layers: [String]
        public var layersDigest: String
        public var parts: [Entry]
        public var createdBy: String

        /// The part record entry `index` describes.
        public func part(_ index: Int) -> TablePart {
            TablePart(split: split, index: index, parts: parts.count, axis: axis, tableRows: tableRows, tableDim: tableDim,
                      first: parts[index].first, count: parts[index].count, layersDigest: layersDigest)
        }
    }

    /// Splits the complete store at `path` into `parts` pieces along `axis` (rows: as equal
    /// row ranges as can be; dims: equal column slices, so `parts` must divide the dimension and
    /// every layer's chunk width must line up, see Spec/DISTRIBUTED.md) in the new directory
    /// `directory`. Each part keeps the source's element type, codec and level and carries all
    /// its layers. The parts are written into `DIRECTORY.splitting` and checked (`verify`, and
    /// every layer against the whole table's shape) before it is renamed into place, so an
    /// interrupted split leaves nothing under `directory` (a later run removes the leftover).
    @discardableResult
    public static func run(_ path: String, parts: Int, axis: TablePart.Axis, into directory: String, createdBy: String,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Manifest {
        let source = try Store.open(at: path, cacheBytes: 0, checksInBackground: false)  // reads every row itself
        let table = source.layout
        guard source.isComplete else { throw StoreError.incomplete(rowsCommitted: source.state.rowsCommitted, rows: table.rows) }
        guard try source.tablePart() == nil else {
            throw StoreError.invalidArgument("'\(path)' is itself a part of a split table; split the whole store instead")
        }
        let extent = axis == .rows ? table.rows : table.dim
        guard parts >= 1, parts <= min(extent, 4096) else {
            throw StoreError.invalidArgument("cannot cut \(extent) \(axis.rawValue) into \(parts) parts (1 to \(min(extent, 4096)))")
        }
        let layers = try source.layerNames()
        if axis == .dims { try checkDimensionSlices(source, layers, parts) }
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw StoreError.invalidArgument("'\(directory)' already exists: choose a new directory for the parts")
        }
        let temporary = directory + ".splitting"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: false)
            let entries = (0..<parts).map { k in
                let first = k * extent / parts
                return Manifest.Entry(file: "part-\(k).pkm", first: first, count: (k + 1) * extent / parts - first)
            }
            let manifest = Manifest(format: Manifest.formatName, version: Manifest.currentVersion, split: UUID().uuidString, axis: axis,
                                    tableRows: table.rows, tableDim: table.dim, elementType: table.elementType.rawValue, layers: layers,
                                    layersDigest: try source.layersDigest(), parts: entries, createdBy: createdBy)
            try writeParts(source, manifest, in: temporary, progress: progress)
            for k in 0..<parts {
                let problems = try checkPart(at: temporary + "/" + entries[k].file, expected: manifest.part(k))
                guard problems.isEmpty else { throw StoreError.inconsistent("part \(k) failed its check after writing: \(problems[0])") }
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            do { try OutputFile.write(encoder.encode(manifest), to: temporary + "/" + manifestName) } catch let error as OutputFileError {
                throw StoreError.invalidArgument("cannot write '\(temporary)/\(manifestName)': \(error.reason)")
            }
            syncDirectory(holding: temporary + "/" + manifestName)  // the parts' names, before the directory takes its own
            guard rename(temporary, directory) == 0 else {
                throw StoreError.invalidArgument("cannot move the parts into '\(directory)': \(String(cString: strerror(errno)))")
            }
            syncDirectory(holding: directory)
            return manifest
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            if case StoreError.diskFull(_, let free, _) = error {
                throw StoreError.diskFull(path: temporary, freeBytes: free,
                                          kept: "the parts did not fit; nothing was left at '\(directory)' and '\(path)' is unchanged")
            }
            throw error
        }
    }

    /// A dimension-wise part receives one weight per chunk of its columns, so each layer's chunk
    /// width `v / c` must be a multiple of the slice width `v / P`, or the slice width of the chunk width.
    private static func checkDimensionSlices(_ source: Store, _ layers: [String], _ parts: Int) throws {
        let configs = try layers.map { (name: $0, config: try MemoryLayer.retrievalConfig(of: source, layer: $0)) }
        for (name, config) in configs where (config?.gateDim ?? 0) > 0 {
            throw StoreError.invalidArgument("layer '\(name)' is gated by the last \(config!.gateDim) elements of each row, whose dot product " +
                                             "a dimension-wise part cannot compute alone: split it --by rows")
        }
        let dim = source.layout.dim
        guard dim % parts == 0 else {
            throw StoreError.invalidArgument("a dimension-wise split needs the part count to divide the row's \(dim) elements (got \(parts) parts)")
        }
        for (name, config) in configs {
            guard let c = config?.cores else { continue }
            guard c % parts == 0 || parts % c == 0 else {
                throw StoreError.invalidArgument("layer '\(name)' weights its rows in \(c) chunks; a dimension-wise split into \(parts) parts " +
                                                 "needs a part count that divides \(c) or is a multiple of it")
            }
        }
    }

    /// Writes every part in one pass over the source's shards.
    private static func writeParts(_ source: Store, _ manifest: Manifest, in directory: String, progress: ((Int, Int) -> Void)?) throws {
        let table = source.layout, size = table.elementType.size
        var options = StoreWriter.Options()
        options.createdBy = manifest.createdBy
        let layers = try manifest.layers.map { (name: $0, contents: try source.layerContents($0)) }
        let writers = try manifest.parts.indices.map { k in
            let shape = manifest.part(k).partShape
            let layout = TableLayout(elementType: table.elementType, rows: shape.rows, dim: shape.dim,
                                     rowsPerShard: manifest.axis == .rows ? table.rowsPerShard : nil,
                                     codec: table.codec, level: table.level, dictionary: table.dictionary)
            let writer = try StoreWriter.create(at: directory + "/" + manifest.parts[k].file, layout: layout,
                                                metadata: source.manifest.metadata, options: options)
            for layer in layers { try writer.putLayer(layer.name, record: layer.contents.record, tensors: layer.contents.tensors) }
            try writer.putMetaRecord(TablePart.recordName, manifest.part(k).encoded())
            return writer
        }
        var slice: [UInt8] = []
        for s in 0..<table.shardCount {
            let shardRows = table.rowRange(ofShard: s)
            try source.withShardRows(s) { bytes in
                for (k, entry) in manifest.parts.enumerated() {
                    if manifest.axis == .rows {
                        let lo = max(entry.first, shardRows.lowerBound), hi = min(entry.first + entry.count, shardRows.upperBound)
                        guard lo < hi else { continue }
                        let start = (lo - shardRows.lowerBound) * table.rowBytes
                        try writers[k].append(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + (hi - lo) * table.rowBytes)]))
                    } else {
                        let width = entry.count * size, offset = entry.first * size
                        slice.removeAll(keepingCapacity: true)
                        for r in 0..<shardRows.count {
                            let start = r * table.rowBytes + offset
                            slice.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + width)]))
                        }
                        try slice.withUnsafeBytes { try writers[k].append($0) }
                    }
                }
            }
            if s % 256 == 255 { progress?(s + 1, table.shardCount) }
        }
        for writer in writers { try writer.finish() }
        progress?(table.shardCount, table.shardCount)
    }

    /// Reads and checks `split.json` in `directory`.
    public static func manifest(in directory: String) throws -> Manifest {
        let path = directory + "/" + manifestName
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError.notFound(path: path)
        }
        let manifest: Manifest
        do { manifest = try JSONDecoder().decode(Manifest.self, from: data) } catch {
            throw StoreError.badManifest("'\(path)' is not a split manifest: \(error)")
        }
        guard manifest.format == Manifest.formatName else { throw StoreError.badManifest("'\(path)' has format '\(manifest.format)', not '\(Manifest.formatName)'") }
        guard manifest.version >= 1, manifest.version <= Manifest.currentVersion else {
            throw StoreError.unsupportedVersion(found: manifest.version, supported: Manifest.currentVersion)
        }
        guard !manifest.parts.isEmpty else { throw StoreError.badManifest("'\(path)' lists no parts") }
        for (k, entry) in manifest.parts.enumerated() {
            guard !entry.file.isEmpty, !entry.file.contains("/"), entry.file != "..", entry.file != "." else {
                throw StoreError.badManifest("part \(k)'s file name '\(entry.file)' must name a file inside the split's directory")
            }
            try manifest.part(k).validate()
        }
        let problems = TablePart.tilingProblems(manifest.parts.indices.map(manifest.part))
        guard problems.isEmpty else { throw StoreError.badManifest("'\(path)': \(problems.joined(separator: "; "))") }
        return manifest
    }

    /// What is wrong with the part store at `path` given what the manifest says it holds: its
    /// part record, every shard and tensor (`Store.verify`) and its layers (their digest, each
    /// checked against the whole table's shape). Empty when it is the part the manifest names.
    public static func checkPart(at path: String, expected: TablePart) throws -> [String] {
        let store = try Store.open(at: path, cacheBytes: 0)
        guard let part = try store.tablePart() else { return ["'\(path)' is not a part of a split table (it has no part record)"] }
        var problems: [String] = []
        if part != expected {
            problems.append("'\(path)' holds part \(part.index) of \(part.parts) (\(part.axis.rawValue) \(part.first)..<\(part.first + part.count), split \(part.split)), " +
                            "the manifest expects part \(expected.index) of \(expected.parts) (\(expected.axis.rawValue) \(expected.first)..<\(expected.first + expected.count), split \(expected.split))")
        }
        problems += try store.verify().problems.map { "'\(path)': \($0)" }
        if try store.layersDigest() != part.layersDigest { problems.append("'\(path)': its layers differ from the split's (digest mismatch)") }
        for name in try store.layerNames() {
            do { try MemoryLayer.check(store: store, name: name) } catch { problems.append("'\(path)': layer '\(name)': \(error)") }
        }
        return problems
    }

    /// Every problem of the split in `directory`: its manifest, then each part (``checkPart(at:expected:)``).
    public static func verify(_ directory: String, progress: ((Int, Int) -> Void)? = nil) throws -> (manifest: Manifest, problems: [String]) {
        let manifest = try manifest(in: directory)
        var problems: [String] = []
        for (k, entry) in manifest.parts.enumerated() {
            do { problems += try checkPart(at: directory + "/" + entry.file, expected: manifest.part(k)) } catch {
                problems.append("part \(k) ('\(entry.file)'): \(error)")
            }
            progress?(k + 1, manifest.parts.count)
        }
        return (manifest, problems)
    }
}
