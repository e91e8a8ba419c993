import CLMDB
import Foundation
import _MemorySupport

/// Rewrites a store without its free pages, optionally re-encoding every shard.
///
/// The new store is built beside the target as `TARGET.compacting` and renamed over it only
/// when complete, so a process killed at any point leaves the original intact (and a later
/// run removes the leftover). Readers that have the old file open keep reading it. In place,
/// writers are held off meanwhile (``WriterLock``).
public enum Compaction {
    /// What to change while rewriting; nil keeps the store's own setting.
    public struct Changes: Sendable {
        public var codec: CodecKind?
        public var level: Int?
        public var rowsPerShard: Int?
        public var dictionary: Bool?
        public init() {}

        var reencodes: Bool { codec != nil || level != nil || rowsPerShard != nil || dictionary != nil }
    }

    /// Compacts `path` into `destination` (or in place); returns the file sizes before and after.
    @discardableResult
    public static func run(_ path: String, destination: String? = nil, changes: Changes = Changes(),
                           progress: ((Int, Int) -> Void)? = nil) throws -> (before: Int, after: Int) {
        // In place also when `destination` names the store's own file by another name. The file
        // itself is replaced, not a link to it (storeFilePath).
        let other = destination.flatMap { OpenEnvironments.FileID(path: $0) == OpenEnvironments.FileID(path: path) ? nil : $0 }
        let inPlace = other == nil
        let target = storeFilePath(other ?? path)
        if !inPlace, let kind = fileKind(atPath: target), kind != S_IFREG {
            throw StoreError.invalidArgument("'\(target)' is not a regular file: compact --output writes a store file there")
        }
        let temporary = target + ".compacting"
        func removeCopy() { for leftover in [temporary, temporary + "-lock"] { try? FileManager.default.removeItem(atPath: leftover) } }
        // In place, writers are held off from before the snapshot until the copy has replaced the
        // file (WriterLock): a commit to the file in between would be lost with it. One that
        // starts meanwhile waits, then writes the copy; one already writing makes this throw.
        let writersHeldOff = inPlace ? try WriterLock.exclusive(path) : nil
        removeCopy()
        let before = fileSize(atPath: path)
        do {
            let source = try Store.open(at: path, cacheBytes: 0, checksInBackground: false)  // reads every row itself
            guard source.isComplete else {
                throw StoreError.incomplete(rowsCommitted: source.state.rowsCommitted, rows: source.layout.rows)
            }
            if changes.reencodes {
                try reencode(source, into: temporary, changes: changes, progress: progress)
            } else {
                try source.env.copyCompacted(to: temporary)
            }
            // Check the copy before it replaces anything.
            let copy = try Store.open(at: temporary, cacheBytes: 0, checksInBackground: false)
            let report = try copy.verify()
            guard report.isSound else { throw StoreError.inconsistent("the compacted copy failed verification: \(report.problems[0])") }
        } catch {
            var full = isOutOfSpace(error, near: temporary, needed: 2 * before + (16 << 20))
            if case StoreError.diskFull = error { full = true }
            let free = freeBytes(near: temporary) ?? 0
            removeCopy()
            if full {
                throw StoreError.diskFull(path: temporary, freeBytes: free, kept: "the compacted copy did not fit; '\(path)' is unchanged")
            }
            throw error
        }
        // On storage before it takes the store's name: LMDB's copy is not synced, and a power cut
        // after the rename must find the old store or the whole new one.
        if let failure = syncFile(atPath: temporary) {
            removeCopy()
            throw StoreError.invalidArgument("cannot flush the compacted copy to storage (\(failure)); '\(path)' is unchanged")
        }
        // The copy is held too, so that a writer that opens the path once it names the copy waits
        // until the old lock file is gone.
        let copyHeldOff = writersHeldOff == nil ? nil : try WriterLock.exclusive(temporary)
        guard rename(temporary, target) == 0 else {
            throw StoreError.invalidArgument("cannot move the compacted store into place: \(String(cString: strerror(errno)))")
        }
        syncDirectory(holding: target)
        // The old lock file describes the old file; readers of the new one must start a fresh
        // one (readers still on the old file keep theirs open). See OpenEnvironments.
        unlink(target + "-lock")
        try? FileManager.default.removeItem(atPath: temporary + "-lock")
        withExtendedLifetime((writersHeldOff, copyHeldOff)) {}
        return (before, fileSize(atPath: target))
    }

    private static func reencode(_ source: Store, into path: String, changes: Changes, progress: ((Int, Int) -> Void)?) throws {
        let old = source.layout
        let layout = TableLayout(elementType: old.elementType, rows: old.rows, dim: old.dim,
                                 rowsPerShard: changes.rowsPerShard ?? (changes.codec != nil ? nil : old.rowsPerShard),
                                 codec: changes.codec ?? old.codec, level: changes.level ?? old.level,
                                 dictionary: changes.dictionary ?? (old.dictionary && (changes.codec ?? old.codec) == .zstd))
        try layout.validate()
        var options = StoreWriter.Options()
        options.createdBy = source.manifest.createdBy
        let writer = try StoreWriter.create(at: path, layout: layout, metadata: source.manifest.metadata, options: options)
        try copyLayers(of: source, to: writer)
        for s in 0..<old.shardCount {
            try source.withShardRows(s) { try writer.append($0) }
            if s % 256 == 255 { progress?(s + 1, old.shardCount) }
        }
        try writer.finish()
        progress?(old.shardCount, old.shardCount)
    }

    /// Copies every layer (the one layer of a version 1-3 store becomes ``LayerKeys/defaultName``
    /// of the current version), then the tensors and records that belong to no layer.
    private static func copyLayers(of source: Store, to writer: StoreWriter) throws {
        var copied = Set<String>()
        for name in try source.layerNames() {
            let keys = try source.layerKeys(name)
            let (record, tensors) = try source.layerContents(name)
            try writer.putLayer(name, record: record, tensors: tensors)
            copied.insert(keys.record)
            for base in tensors.keys { copied.insert(keys.tensor(base)) }
        }
        for name in try source.tensorNames() where !StoredRecords.tableTensors.contains(name) && !copied.contains(name) {
            try writer.putTensor(name, source.tensor(named: name))
        }
        for name in try source.metaRecordNames() where !copied.contains(name) {
            try writer.putMetaRecord(name, source.metaRecord(named: name) ?? [])
        }
    }
}
