import CLMDB
import Foundation
import _MemorySupport

/// The findings of a full check of a store.
public struct VerificationReport: Sendable {
    public var shardsChecked = 0
    public var tensorsChecked = 0
    /// `meta` records besides the manifest, import state and catalog (which opening and the other checks read).
    public var recordsChecked = 0
    public var bytesDecoded = 0
    /// Every problem found, each naming the shard or tensor.
    public var problems: [StoreError] = []
    public var isSound: Bool { problems.isEmpty }
}

extension Store {
    /// Decodes every committed shard, tensor and meta record and checks their checksums.
    /// Reports every bad shard instead of stopping at the first.
    public func verify(progress: ((Int, Int) -> Void)? = nil) throws -> VerificationReport {
        var report = VerificationReport()
        let shards = (readableRows + layout.rowsPerShard - 1) / layout.rowsPerShard
        for index in 0..<shards {
            do {
                try withShardRows(index) { report.bytesDecoded += $0.count }
            } catch let error as StoreError {
                report.problems.append(error)
            }
            report.shardsChecked += 1
            if index % 256 == 255 { progress?(index + 1, shards) }
        }
        progress?(shards, shards)
        // Everything stored and everything the catalog lists: one without the other is damage.
        let stored = try keys(of: env.meta).filter { !Catalog.reservedRecords.contains($0) }
        let listed = try metaRecordNames()
        for name in Set(stored).union(listed).sorted() {
            do {
                _ = try metaRecord(named: name)
                if manifest.formatVersion >= 3, !listed.contains(name) {
                    report.problems.append(.corruptRecord(name: name, reason: "it is not in the catalog"))
                }
            } catch let error as StoreError { report.problems.append(error) }
            report.recordsChecked += 1
        }
        for name in Set(try keys(of: env.tensors)).union(try tensorNames()).sorted() {
            do { _ = try tensor(named: name) } catch let error as StoreError { report.problems.append(error) }
            report.tensorsChecked += 1
        }
        return report
    }
}

/// How the store uses its file, from LMDB's own statistics.
public struct StorageStatistics: Sendable, Codable {
    public var fileBytes: Int
    public var pageSize: Int
    public var mapSize: Int
    public var pagesUsed: Int
    public var shardTreeDepth: Int
    public var branchPages: Int
    public var leafPages: Int
    public var overflowPages: Int
    /// Pages on LMDB's free list: space a compaction would give back.
    public var freePages: Int
    public var shards: Int
    /// Sum of the shard blobs' sizes.
    public var shardBytes: Int
    public var smallestShard: Int
    public var largestShard: Int
    public var readersUsed: Int
    public var maxReaders: Int
}

extension Store {
    /// LMDB's picture of the file and the sizes of all shard blobs (one pass over the shard keys, no decoding).
    public func storageStatistics() throws -> StorageStatistics {
        let info = env.info
        let fileBytes = env.fileBytes
        return try env.read { txn in
            let s = env.stat(env.shards, in: txn)
            var total = 0, smallest = Int.max, largest = 0, count = 0
            try txn.forEachEntry(env.shards) { _, blob in
                total += blob.count
                smallest = min(smallest, blob.count)
                largest = max(largest, blob.count)
                count += 1
            }
            // LMDB's free list is database 0; each record is a page-number list led by its length.
            var freePages = 0
            try txn.forEachEntry(0) { _, list in
                if list.count >= MemoryLayout<Int>.size { freePages += list.loadUnaligned(as: Int.self) }
            }
            var pages = 0
            for dbi in [env.meta, env.tensors, env.shards] {
                let d = env.stat(dbi, in: txn)
                pages += Int(d.ms_branch_pages + d.ms_leaf_pages + d.ms_overflow_pages)
            }
            return StorageStatistics(
                fileBytes: fileBytes, pageSize: info.pageSize, mapSize: info.mapSize, pagesUsed: info.lastPage + 1,
                shardTreeDepth: Int(s.ms_depth), branchPages: Int(s.ms_branch_pages), leafPages: Int(s.ms_leaf_pages),
                overflowPages: Int(s.ms_overflow_pages), freePages: freePages, shards: count, shardBytes: total,
                smallestShard: count == 0 ? 0 : smallest, largestShard: largest,
                readersUsed: info.readersUsed, maxReaders: info.maxReaders)
        }
    }
}
