import Foundation

/// Prefetching for batches that read from storage.
extension Store {
    /// Asks the kernel to start reading what the batch needs of every shard that is neither
    /// cached nor resident, so a cold batch waits for many reads at once instead of faulting each
    /// page in turn (the map is opened with `MDB_NORDAHEAD`): the pages of each row and its
    /// checksum for raw shards of version 3 and later (whose rows are checked one by one), whole
    /// blobs otherwise, read into the page cache without mapping them when ``blobs`` reads
    /// compressed shards. Touches only the B-tree pages that locate the blobs. Not for a table the
    /// background check reads whole (``readsWholeTable``): what the kernel reads when asked is
    /// cached in 4 KiB pages, which would keep those 2 MiB spans mapped in 4 KiB pages.
    func prefetchUncachedShards(_ order: [UInt64], packed: Bool, indices: UnsafeBufferPointer<Int>,
                                        context: ReaderContext) throws {
        // Those pages would be read in 4 KiB; faults read them in 2 MiB folios (adviseLargeFolios).
        guard !readsWholeTable else { return }
        func row(_ k: Int) -> Int { packed ? Int(order[k] >> 24) : indices[Int(order[k])] }
        var i = 0
        while i < order.count {
            let shard = row(i) / layout.rowsPerShard
            let group = i
            while i < order.count && row(i) / layout.rowsPerShard == shard { i += 1 }
            if layout.codec != .raw && cache.contains(shard) { continue }
            try withShardKey(shard) { k in
                try context.transaction.withValue(env.shards, key: k) { blob in
                    guard let blob, let start = blob.baseAddress.map({ Int(bitPattern: $0) }) else { return }
                    if layout.codec == .zstd, let blobs {
                        blobs.willNeed(blob)
                    } else if layout.codec == .raw, let raw = rawShards {
                        for k in group..<i {
                            let r = row(k) - shard * layout.rowsPerShard
                            let at = start + raw.start + raw.rowOffset(r), checksum = start + raw.start + raw.checksumOffset(r)
                            adviseWillNeed(min(at, checksum), max(at + layout.rowBytes, checksum + 8))
                        }
                    } else {
                        adviseWillNeed(start, start + blob.count)
                    }
                }
            }
        }
    }

    /// This thread's storage reads so far when this call should find out whether batches read
    /// from storage (which decides whether they prefetch), else nil: every batch of 1,024 rows
    /// or more, every batch while they do, and every 16th smaller one otherwise. Asking costs
    /// two system calls, as much as reducing a hundred rows from memory.
    func sampleStorageReads(rows: Int) -> Int? {
        let sample = rows >= 1024 || readingFromDisk.load(ordering: .relaxed)
            || smallBatches.wrappingAdd(1, ordering: .relaxed).oldValue % 16 == 0
        return sample ? storageReads() : nil
    }

    /// Records whether the batch of `rows` rows that began with `readsBefore` reads
    /// (``sampleStorageReads(rows:)``) read from storage: more than one read (a major fault, or
    /// 512 bytes read in: 9 for a page faulted in) for every 32 rows, about a page for every 300.
    /// A few pages a batch, as pages the system reclaimed while they were idle come back, cost
    /// less taken as they fault than the prefetch would (a system call for every row of every
    /// batch, about 40% of a reduce from memory).
    func noteStorageReads(since readsBefore: Int, rows: Int) {
        readingFromDisk.store((storageReads() - readsBefore) * 32 > rows, ordering: .relaxed)
    }
}

/// Asks the kernel to start reading the mapped pages holding addresses `start..<end` (`MADV_WILLNEED`).
func adviseWillNeed(_ start: Int, _ end: Int) {
    let first = start & ~(pageSize - 1)
    _ = madvise(UnsafeMutableRawPointer(bitPattern: first), end - first, MADV_WILLNEED)
}

private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

/// Reads from storage by the calling thread so far: major page faults (through the map) plus
/// blocks read (by `pread`, or readahead it started).
func storageReads() -> Int {
    var usage = rusage()
    getrusage(1, &usage)  // RUSAGE_THREAD, which Glibc does not export to Swift
    return usage.ru_majflt + usage.ru_inblock
}
