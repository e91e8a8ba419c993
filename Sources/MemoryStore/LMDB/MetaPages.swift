import Foundation
import _MemorySupport

/// A check of LMDB's two meta pages before LMDB follows them (Spec/FORMAT.md, "File damage").
///
/// LMDB keeps no page checksums. Each commit rewrites the older of the two meta pages, so
/// their transaction ids differ by exactly one (both are 0 before the first commit), and the
/// newer one names the last page in use and the roots of the B-trees. A bit flip in a
/// transaction id would make LMDB silently open an older commit, and a flip in a page number
/// would send it past the end of the file; both are reported here instead.
enum MetaPages {
    private static let magic: UInt32 = 0xBEEF_C0DE
    private static let invalidPage = UInt64.max

    /// Throws when the meta pages of the LMDB file at `path` contradict each other or the file.
    /// Files too short to hold two meta pages are left to LMDB's own checks.
    static func check(path: String) throws(StoreError) {
        // A commit in another process can land between reading the two pages; damage persists, races do not.
        var failure: StoreError?
        for attempt in 0..<3 {
            failure = findDamage(path: path)
            guard failure != nil else { return }
            if attempt < 2 { usleep(20_000) }
        }
        throw failure!
    }

    /// One meta page's fields this check needs.
    struct Meta {
        var lastPage: UInt64
        var txn: UInt64
        var roots: [UInt64]
    }

    /// The page size, file size and both meta pages of the LMDB file at `path`, or nil when it
    /// cannot be read as one (LMDB's own open then reports why). A page size that is not a
    /// power of two in 512...65536 is returned as is, for the caller to report.
    private static func read(path: String) -> (pageSize: Int, fileSize: Int, metas: [Meta]?)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return read(fd: fd)
    }

    /// `read(path:)` of the file open as `fd`.
    private static func read(fd: Int32) -> (pageSize: Int, fileSize: Int, metas: [Meta]?)? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        var head = [UInt8](repeating: 0, count: 2 * 65536)
        let got = head.withUnsafeMutableBytes { readFully(fd, into: $0.baseAddress!, count: $0.count, at: 0) }
        guard got >= 152 else { return nil }
        func u32(_ at: Int) -> UInt32 { head.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { head.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        // Page 0 starts with a 16-byte page header, then the meta: magic, version, address,
        // map size, two 48-byte database records (the first one's pad holds the page size),
        // last page, transaction id.
        guard u32(16) == magic else { return nil }
        let pageSize = Int(u32(40))
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else { return (pageSize, Int(st.st_size), nil) }
        guard got >= pageSize + 152 else { return nil }
        func meta(_ base: Int) -> Meta { Meta(lastPage: u64(base + 136), txn: u64(base + 144), roots: [u64(base + 80), u64(base + 128)]) }
        return (pageSize, Int(st.st_size), [meta(0), meta(pageSize)])
    }

    private static func findDamage(path: String) -> StoreError? {
        guard let (pageSize, fileSize, metas) = read(path: path) else { return nil }
        guard let pages = metas else { return damaged("meta page 0 records a page size of \(pageSize)") }
        let (t0, t1) = (pages[0].txn, pages[1].txn)
        guard (t0 == 0 && t1 == 0) || t0 &+ 1 == t1 || t1 &+ 1 == t0 else {
            return damaged("the meta pages hold transaction ids \(t0) and \(t1), which should differ by one")
        }
        let newest = pages[t1 > t0 ? 1 : 0]
        let pagesInFile = UInt64(fileSize / pageSize)
        guard newest.lastPage < pagesInFile else {
            return damaged("the newest meta page names page \(newest.lastPage) as last in use, the file has \(pagesInFile) pages")
        }
        for root in newest.roots where root != invalidPage && (root < 2 || root > newest.lastPage) {
            return damaged("the newest meta page names page \(root) as a B-tree root, outside pages 2...\(newest.lastPage)")
        }
        return nil
    }

    /// The page size, file size, last page in use and B-tree roots (free list, main) recorded by
    /// the meta page of transaction `id` in the file open as `fd`, or nil when neither meta page
    /// holds it (a writer has committed twice since) or the file cannot be read as LMDB.
    ///
    /// An open environment's file is read through its descriptor, never its path: a compaction
    /// in another process may have renamed a new file over the path, whose meta pages can hold
    /// the same transaction id and name pages of a different B-tree.
    static func meta(fd: Int32, transaction id: UInt64) -> (pageSize: Int, fileSize: Int, lastPage: UInt64, roots: [UInt64])? {
        guard let (pageSize, fileSize, metas) = read(fd: fd), let meta = metas?.first(where: { $0.txn == id }) else { return nil }
        return (pageSize, fileSize, meta.lastPage, meta.roots)
    }

    /// The transaction ids of the two meta pages of the file open as `fd`, or nil when it cannot be read as LMDB.
    static func transactionIDs(fd: Int32) -> [UInt64]? {
        read(fd: fd)?.metas?.map(\.txn)
    }

    private static func damaged(_ why: String) -> StoreError {
        .inconsistent("the LMDB file is damaged: \(why)")
    }
}
