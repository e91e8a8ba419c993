import CLMDB
import Foundation
import _MemorySupport

/// A check of LMDB's branch and leaf pages before LMDB follows them (Spec/FORMAT.md, "File damage").
///
/// LMDB trusts its pages: a flipped bit in a node's offset, size or flags can send a read
/// outside its page, or down the path of a duplicate-key database that has no cursor for it,
/// and the process crashes inside LMDB (found by the corruption harness). This walk reads
/// every branch and leaf page of a read snapshot with `pread`, never through the map, and
/// checks what LMDB relies on; the overflow pages that hold values are not read, only their
/// extent is checked against the file. The snapshot's read transaction keeps a writer in
/// another process from reusing the pages while they are walked.
struct BTreePages {
    private static let pageHeaderSize = 16, nodeHeaderSize = 8
    private static let branch: UInt16 = 0x01, leaf: UInt16 = 0x02
    private static let bigData: UInt16 = 0x01, subData: UInt16 = 0x02
    private static let invalidPage = UInt64.max
    private static let maxDepth = 32

    private let fd: Int32
    private let pageSize: Int
    private let fileSize: Int
    private let lastPage: UInt64
    private var page: [UInt8]
    private var visited = Set<UInt64>()

    /// Throws, naming the page, when a B-tree page of the environment's current snapshot is damaged.
    static func check(_ env: Environment) throws {
        guard let fd = env.descriptor else { return }
        for _ in 0..<3 {
            var txn: OpaquePointer?
            guard mdb_txn_begin(env.handle, nil, UInt32(MDB_RDONLY), &txn) == 0, let txn else { return }
            defer { mdb_txn_abort(txn) }
            let id = UInt64(mdb_txn_id(txn))
            // The meta page of this snapshot; a writer may have overwritten it since (then retry).
            guard let meta = MetaPages.meta(fd: fd, transaction: id) else { continue }
            var walker = BTreePages(fd: fd, pageSize: meta.pageSize, fileSize: meta.fileSize, lastPage: meta.lastPage)
            try walker.walk(meta.roots[0], database: "free list", main: false, depth: 0)
            try walker.walk(meta.roots[1], database: "main", main: true, depth: 0)
            return
        }
    }

    private init(fd: Int32, pageSize: Int, fileSize: Int, lastPage: UInt64) {
        self.fd = fd
        self.pageSize = pageSize
        self.fileSize = fileSize
        self.lastPage = lastPage
        page = [UInt8](repeating: 0, count: pageSize)
    }

    private func damaged(_ number: UInt64, _ database: String, _ why: String) -> StoreError {
        .inconsistent("the LMDB file is damaged: page \(number) of the \(database) B-tree \(why)")
    }

    private mutating func walk(_ number: UInt64, database: String, main: Bool, depth: Int) throws {
        guard number != Self.invalidPage else { return }
        guard number >= 2, number <= lastPage else { throw damaged(number, database, "is outside pages 2...\(lastPage)") }
        guard depth < Self.maxDepth, visited.insert(number).inserted else { throw damaged(number, database, "is reached twice") }
        let got = page.withUnsafeMutableBytes { readFully(fd, into: $0.baseAddress!, count: pageSize, at: Int(number) * pageSize) }
        guard got == pageSize else { throw damaged(number, database, "cannot be read") }
        let children = try page.withUnsafeBytes { try nodes(of: $0, number, database: database, main: main) }
        for (child, name, isMain) in children { try walk(child, database: name, main: isMain, depth: depth + 1) }
    }

    /// Checks the nodes of the page in `page` and returns the pages they lead to (children of a
    /// branch, roots of the databases a main-B-tree leaf records).
    private func nodes(of page: UnsafeRawBufferPointer, _ number: UInt64, database: String,
                       main: Bool) throws -> [(UInt64, String, Bool)] {
        func u16(_ at: Int) -> Int { Int(UInt16(littleEndian: page.loadUnaligned(fromByteOffset: at, as: UInt16.self))) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: page.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        guard u64(0) == number else { throw damaged(number, database, "records page number \(u64(0))") }
        let flags = UInt16(u16(10)), lower = u16(12), upper = u16(14)
        guard flags & 0x7F == Self.branch || flags & 0x7F == Self.leaf else { throw damaged(number, database, "is neither a branch nor a leaf (flags \(flags))") }
        guard lower >= Self.pageHeaderSize + 2, lower <= upper, upper <= pageSize, (lower - Self.pageHeaderSize) % 2 == 0 else {
            throw damaged(number, database, "has a bad node table (\(lower)...\(upper))")
        }
        var children: [(UInt64, String, Bool)] = []
        for i in 0..<((lower - Self.pageHeaderSize) / 2) {
            let node = u16(Self.pageHeaderSize + 2 * i)
            guard node >= upper, node + Self.nodeHeaderSize <= pageSize, node + Self.nodeHeaderSize + u16(node + 6) <= pageSize else {
                throw damaged(number, database, "has node \(i) outside the page")
            }
            let keySize = u16(node + 6)
            let low = UInt64(u16(node)) | UInt64(u16(node + 2)) << 16
            let nodeFlags = UInt16(u16(node + 4))
            let data = node + Self.nodeHeaderSize + keySize
            if flags & Self.branch != 0 {
                children.append((low | UInt64(nodeFlags) << 32, database, main))
                continue
            }
            // Leaves: values in place or in overflow pages; named databases only in the main B-tree.
            let size = Int(low)
            guard nodeFlags & ~(Self.bigData | Self.subData) == 0, main || nodeFlags & Self.subData == 0 else {
                throw damaged(number, database, "has node \(i) with flags \(nodeFlags)")
            }
            if nodeFlags & Self.bigData != 0 {
                guard data + 8 <= pageSize else { throw damaged(number, database, "has node \(i) outside the page") }
                let overflow = u64(data)
                guard overflow >= 2, overflow <= lastPage, Int(overflow) * pageSize + Self.pageHeaderSize + size <= fileSize else {
                    throw damaged(number, database, "has node \(i) whose value lies outside the file")
                }
            } else {
                guard data + size <= pageSize else { throw damaged(number, database, "has node \(i) outside the page") }
            }
            if nodeFlags & Self.subData != 0 {
                guard size == 48 else { throw damaged(number, database, "has a database record of \(size) bytes") }
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: page[(node + Self.nodeHeaderSize)..<data]), as: UTF8.self)
                children.append((u64(data + 40), name, false))
            }
        }
        return children
    }
}
