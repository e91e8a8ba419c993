import ArgumentParser
import Foundation
import MemoryFormat
import MemoryLayer
import MemoryRetrieval
import MemoryStore

/// The `inspect --json` document (schema in Spec/FORMAT.md, "inspect --json").
struct InspectReport: Encodable {
    var path: String
    var formatVersion: Int
    var complete: Bool
    var rowsCommitted: Int
    var table: TableLayout
    var shardCount: Int
    var rawBytes: Int
    var fileBytes: Int
    var shardBytes: Int
    var compressionRatio: Double
    var fileRatio: Double
    var tensors: [TensorSummary]
    var tensorBytes: Int
    var lmdb: StorageStatistics
    var openMilliseconds: Double
    var createdBy: String
    var createdAt: String
    var metadata: [String: String]
    /// The retrieval parameters of the store's only layer; absent for a value table alone and
    /// for a store of several layers (see `layers`).
    var retrieval: RetrievalConfig?
    /// Every layer, in name order, with its parameters.
    var layers: [LayerSummary]
    /// The part record of a piece of a split table (Spec/FORMAT.md, "Parts"); absent otherwise.
    var part: TablePart?

    struct LayerSummary: Encodable {
        var name: String
        var retrieval: RetrievalConfig
    }

    struct TensorSummary: Encodable {
        var name: String
        var dtype: String
        var shape: [Int]
        var bytes: Int
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a store's manifest, layout and use of disk.")

    @Argument(help: "Path of the store.")
    var store: String

    @Flag(help: "Print a JSON document instead of text.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let s = try Store.open(at: store, cacheBytes: 0)
            let stats = try s.storageStatistics()
            let tensors = try s.tensorNames().map { name in
                let t = try s.tensor(named: name)
                return InspectReport.TensorSummary(name: name, dtype: t.dtype.safetensorsName, shape: t.shape, bytes: t.bytes.count)
            }
            let layers = try s.layerNames().map { name in
                guard let config = try MemoryLayer.retrievalConfig(of: s, layer: name) else { throw StoreError.noLayer(path: store) }
                return InspectReport.LayerSummary(name: name, retrieval: config)
            }
            let raw = s.readableRows * s.layout.rowBytes
            let report = InspectReport(
                path: store, formatVersion: s.manifest.formatVersion, complete: s.isComplete,
                rowsCommitted: s.state.rowsCommitted, table: s.layout, shardCount: stats.shards, rawBytes: raw,
                fileBytes: stats.fileBytes, shardBytes: stats.shardBytes,
                compressionRatio: raw == 0 ? 0 : Double(stats.shardBytes) / Double(raw),
                fileRatio: raw == 0 ? 0 : Double(stats.fileBytes) / Double(raw),
                tensors: tensors, tensorBytes: tensors.reduce(0) { $0 + $1.bytes }, lmdb: stats,
                openMilliseconds: Double(s.openDuration.components.attoseconds) / 1e15 + Double(s.openDuration.components.seconds) * 1e3,
                createdBy: s.manifest.createdBy, createdAt: s.manifest.createdAt, metadata: s.manifest.metadata,
                retrieval: layers.count == 1 ? layers[0].retrieval : nil, layers: layers, part: try s.tablePart())
            if json {
                print(try jsonString(report))
            } else {
                printText(report)
            }
        }
    }

    private func printText(_ r: InspectReport) {
        let t = r.table
        print("store        \(r.path) (format version \(r.formatVersion), opened in \(String(format: "%.2f", r.openMilliseconds)) ms)")
        print("status       \(r.complete ? "complete" : "INCOMPLETE: \(r.rowsCommitted) of \(t.rows) rows committed; re-run the import to finish")")
        print("values       \(t.rows) rows x \(t.dim) \(t.elementType.rawValue)")
        if let p = r.part {
            print("part         \(p.index) of \(p.parts) of split \(p.split): \(p.axis.rawValue) \(p.first)..<\(p.first + p.count) " +
                  "of a \(p.tableRows) x \(p.tableDim) table (its layers are the whole table's)")
        }
        print("shards       \(r.shardCount) of \(t.rowsPerShard) rows, codec \(t.codec.rawValue)\(t.codec == .zstd ? " level \(t.level)" : "")\(t.dictionary ? " + dictionary" : ""), " +
              "sizes \(humanBytes(r.lmdb.smallestShard))...\(humanBytes(r.lmdb.largestShard))")
        print("size         \(humanBytes(r.shardBytes)) in shards for \(humanBytes(r.rawBytes)) of raw values (\(String(format: "%.3f", r.compressionRatio))x); " +
              "file \(humanBytes(r.fileBytes))\(r.tensorBytes > 0 ? " with \(humanBytes(r.tensorBytes)) of tensors" : "") (\(String(format: "%.3f", r.fileRatio))x of raw values)")
        print("lmdb         page \(r.lmdb.pageSize) B, shard tree depth \(r.lmdb.shardTreeDepth), " +
              "\(r.lmdb.branchPages) branch + \(r.lmdb.leafPages) leaf + \(r.lmdb.overflowPages) overflow pages, " +
              "\(r.lmdb.pagesUsed) pages used, \(r.lmdb.freePages) free, readers' map \(humanBytes(r.lmdb.mapSize))")
        if r.layers.isEmpty { print("layers       none: the store holds a value table only") }
        for layer in r.layers { print("layer        \(layer.name): \(layer.retrieval.summary)") }
        print("tensors      \(r.tensors.isEmpty ? "none" : r.tensors.map { "\($0.name) \($0.dtype)\($0.shape)" }.joined(separator: ", "))")
        print("created      \(r.createdAt) by \(r.createdBy)\(r.metadata.isEmpty ? "" : " " + r.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
    }
}
