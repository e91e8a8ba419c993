/// The row code of the `nibble` codec (Spec/FORMAT.md, "Nibble"): each element's top byte (its
/// sign and high exponent bits) becomes a 4-bit code into a table of 15 top bytes trained once
/// per store, and the element's other bytes are kept as they are. A row whose top bytes are not
/// all in the table is escaped: stored whole after its shard's row groups, its slot saying where.
///
/// A coded row's slot is `(dim + 1) / 2` bytes of codes (element `i`'s in byte `i / 2`, the low
/// nibble for even `i`), then for each element in turn its bytes below the top byte.
public struct NibbleCode: Sendable, Equatable {
    /// The store tensor (u8, shape [15]) holding ``topBytes``.
    public static let tensorName = "__nibble_codes"
    /// Codes 0 to 14 stand for table entries; 15 is never written in a coded row.
    public static let tableEntries = 15
    /// An escaped row's slot starts with this byte (two codes 15), which no coded row can.
    public static let escapeMarker: UInt8 = 0xFF
    /// The smallest slot: an escaped row's marker, three zero bytes and its u32 escape index.
    public static let minimumSlotBytes = 8

    /// The top byte each code 0 to 14 stands for, all distinct.
    public let topBytes: [UInt8]
    /// Code of each top byte (-1: not in the table).
    private let codeOf: [Int8]

    /// The code of a stored table; throws when it is not 15 distinct bytes.
    public init(topBytes: [UInt8]) throws {
        guard topBytes.count == Self.tableEntries, Set(topBytes).count == Self.tableEntries else {
            throw StoreError.corruptTensor(name: Self.tensorName, reason: "it must hold \(Self.tableEntries) distinct bytes (got \(topBytes))")
        }
        self.topBytes = topBytes
        var codeOf = [Int8](repeating: -1, count: 256)
        for (code, byte) in topBytes.enumerated() { codeOf[Int(byte)] = Int8(code) }
        self.codeOf = codeOf
    }

    /// The table of `rows` (whole rows of `elementType`): the 15 most frequent top bytes, the more
    /// frequent first (ties: the smaller byte first), filled up with the smallest bytes absent.
    public static func train(_ rows: UnsafeRawBufferPointer, elementType: ElementType) -> NibbleCode {
        let size = elementType.size
        var counts = [Int](repeating: 0, count: 256)
        var i = size - 1
        while i < rows.count {
            counts[Int(rows[i])] += 1
            i += size
        }
        var chosen = (0..<256).filter { counts[$0] > 0 }.sorted { (counts[$0], -$0) > (counts[$1], -$1) }.prefix(tableEntries).map(UInt8.init)
        for byte in 0...255 where chosen.count < tableEntries && !chosen.contains(UInt8(byte)) { chosen.append(UInt8(byte)) }
        return try! NibbleCode(topBytes: chosen)  // 15 distinct by construction
    }

    /// Bytes of a coded row of `dim` elements of `elementType`.
    public static func slotBytes(dim: Int, elementType: ElementType) -> Int {
        (dim + 1) / 2 + (elementType.size - 1) * dim
    }

    /// The 16 bytes a decoder looks codes up in: the table, then 0 for code 15.
    public var decodeTable: [UInt8] { topBytes + [0] }

    /// Codes `row` (`dim` elements of `size` bytes) into `slot` (``slotBytes(dim:elementType:)`` bytes, zeroed);
    /// false, leaving `slot` partly written, when a top byte is not in the table.
    public func encode(_ row: UnsafeRawPointer, dim: Int, elementSize size: Int, into slot: UnsafeMutableRawPointer) -> Bool {
        let nibbles = (dim + 1) / 2
        let rest = size - 1
        let src = row.assumingMemoryBound(to: UInt8.self), out = slot.assumingMemoryBound(to: UInt8.self)
        for e in 0..<dim {
            let code = codeOf[Int(src[e * size + rest])]
            guard code >= 0 else { return false }
            out[e >> 1] |= UInt8(code) << ((e & 1) * 4)
            for b in 0..<rest { out[nibbles + e * rest + b] = src[e * size + b] }
        }
        return true
    }
}
