import Foundation

/// What a part store of a split value table holds (Spec/FORMAT.md, "Parts";
/// Spec/DISTRIBUTED.md): the `meta/part` record, and one entry of a split's `split.json`.
///
/// A table of `tableRows` x `tableDim` is cut into `parts` pieces along one axis: rows
/// `first ..< first + count` of every column (`rows`), or columns `first ..< first + count` of
/// every row (`dims`). The part store's value table is that piece; its layers are the whole
/// table's, byte for byte, so their pool shape is the whole table's and not the part's.
public struct TablePart: Codable, Sendable, Equatable {
    public enum Axis: String, Codable, Sendable, CaseIterable {
        case rows, dims
    }

    /// The key of the record in `meta`.
    public static let recordName = "part"

    /// Identifies the split: every part of one split carries the same identifier.
    public var split: String
    public var index: Int
    public var parts: Int
    public var axis: Axis
    public var tableRows: Int
    public var tableDim: Int
    /// The first row (`rows`) or column (`dims`) of the table this part holds, and how many.
    public var first: Int
    public var count: Int
    /// The digest of the whole table's layers (``LayersDigest``), the same in every part.
    public var layersDigest: String

    public init(split: String, index: Int, parts: Int, axis: Axis, tableRows: Int, tableDim: Int, first: Int, count: Int,
                layersDigest: String) {
        self.split = split
        self.index = index
        self.parts = parts
        self.axis = axis
        self.tableRows = tableRows
        self.tableDim = tableDim
        self.first = first
        self.count = count
        self.layersDigest = layersDigest
    }

    /// The part's rows or columns of the table.
    public var range: Range<Int> { first ..< first + count }

    /// The shape of the value table the part store holds.
    public var partShape: (rows: Int, dim: Int) { axis == .rows ? (count, tableDim) : (tableRows, count) }

    /// The part record as stored: JSON with sorted keys.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    /// Decodes and checks a part record against the value table of the store that holds it.
    public static func decode(_ bytes: [UInt8], table: TableLayout) throws(StoreError) -> TablePart {
        let part: TablePart
        do { part = try JSONDecoder().decode(TablePart.self, from: Data(bytes)) } catch {
            throw .corruptRecord(name: recordName, reason: "it is not a valid part record: \(error)")
        }
        try part.validate()
        let shape = part.partShape
        guard shape.rows == table.rows, shape.dim == table.dim else {
            throw .corruptRecord(name: recordName, reason: "part \(part.index) of \(part.parts) holds \(part.axis.rawValue) \(part.first)..<\(part.first + part.count) " +
                                 "of a \(part.tableRows) x \(part.tableDim) table, a \(shape.rows) x \(shape.dim) piece, but the store's value table is \(table.rows) x \(table.dim)")
        }
        return part
    }

    /// Refuses a record whose numbers do not describe a piece of its table.
    public func validate() throws(StoreError) {
        func bad(_ why: String) -> StoreError { .corruptRecord(name: Self.recordName, reason: why) }
        guard !split.isEmpty, split.utf8.count <= 64 else { throw bad("the split identifier must be 1 to 64 bytes") }
        guard parts >= 1, index >= 0, index < parts else { throw bad("part \(index) of \(parts) is not a part") }
        guard tableRows >= 1, tableDim >= 1, tableRows <= 1 << 40, tableDim <= 1 << 20 else {
            throw bad("a \(tableRows) x \(tableDim) table is out of range")
        }
        let extent = axis == .rows ? tableRows : tableDim
        guard first >= 0, count >= 1, first <= extent - count else {
            throw bad("\(axis.rawValue) \(first)..<\(first &+ count) are not inside the table's \(extent)")
        }
    }

    /// Checks that `parts` (sorted by index) tile one table exactly, as the entries of one split:
    /// the same identifier, axis, table and layers, indices 0 ..< P, and ranges that follow one
    /// another with no gap or overlap from 0 to the table's extent. Returns every problem found.
    public static func tilingProblems(_ parts: [TablePart]) -> [String] {
        guard let head = parts.first else { return ["the split has no parts"] }
        var problems: [String] = []
        var next = 0
        for (i, part) in parts.enumerated() {
            let name = "part \(i)"
            if part.split != head.split { problems.append("\(name) belongs to split \(part.split), not \(head.split)") }
            if part.index != i || part.parts != parts.count {
                problems.append("\(name) says it is part \(part.index) of \(part.parts), the split has \(parts.count)")
            }
            if part.axis != head.axis { problems.append("\(name) is split by \(part.axis.rawValue), part 0 by \(head.axis.rawValue)") }
            if part.tableRows != head.tableRows || part.tableDim != head.tableDim {
                problems.append("\(name) is a piece of a \(part.tableRows) x \(part.tableDim) table, part 0 of \(head.tableRows) x \(head.tableDim)")
            }
            if part.layersDigest != head.layersDigest { problems.append("\(name) holds other layers than part 0 (digest \(part.layersDigest), not \(head.layersDigest))") }
            if part.first > next { problems.append("\(head.axis.rawValue) \(next)..<\(part.first) are in no part (a gap before \(name))") }
            if part.first < next { problems.append("\(name) overlaps the part before it (\(head.axis.rawValue) \(part.first)..<\(next))") }
            next = max(next, part.first + part.count)
        }
        let extent = head.axis == .rows ? head.tableRows : head.tableDim
        if next != extent { problems.append("the parts end at \(head.axis.rawValue.dropLast()) \(next), the table has \(extent)") }
        return problems
    }
}
