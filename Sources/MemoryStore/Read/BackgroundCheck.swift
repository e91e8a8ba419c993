import Foundation
import Synchronization

/// A thread that checks, once, every row group of a table read in place whose pages are in
/// memory (``RawRowIndex/checkGroups(fromStorage:until:)``), then, when the table fits in half
/// the memory available (`readsStorage`), the groups whose pages are on storage, reading them
/// in (and, given ``SlotsInMemory``, once every group is checked, copies a nibble table's slots
/// into it): a table that can be served from memory is soon wholly checked and its reads no longer
/// test each row's group bit (BENCHMARKS.md: that test costs up to half a reduce of rows beyond
/// the caches), whichever of its pages were in memory when it was opened.
///
/// The thread runs at the idle scheduling priority (`SCHED_IDLE`): it takes only processor time
/// no other thread wants, so a machine whose cores are all reducing gets no slower and its
/// reads go on checking their rows themselves. The thread holds the index it checks (so the
/// index, and the map it reads, outlive it); releasing its ``BackgroundCheck`` stops it.
final class BackgroundCheck: Sendable {
    private let progress = Progress()
    /// The thread, and the process that started it: a child forked since has no such thread.
    private let thread: pthread_t
    private let owner = getpid()

    /// Starts the thread over `index`, reading the groups on storage too with `readsStorage`;
    /// nil when no thread can be started (reads then check their rows themselves, as always).
    init?(_ index: RawRowIndex, readsStorage: Bool, copying: SlotsInMemory?) {
        guard let thread = Self.start(Work(index: index, readsStorage: readsStorage, copying: copying, progress: progress)) else { return nil }
        self.thread = thread
    }

    /// Starts a thread that runs `work` at the idle priority (best effort).
    private static func start(_ work: Work) -> pthread_t? {
        let context = Unmanaged.passRetained(work).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { context in
            let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
            var priority = sched_param()
            pthread_setschedparam(pthread_self(), BackgroundCheck.idlePolicy, &priority)
            work.run()
            return nil
        }, context) == 0 else {
            Unmanaged<Work>.fromOpaque(context).release()
            return nil
        }
        return thread
    }

    /// Linux's `SCHED_IDLE`, which Glibc's module does not export.
    private static let idlePolicy: Int32 = 5

    /// What the thread and its owner share.
    private final class Progress: Sendable {
        let stopping = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        /// Groups the thread checked, set before `finished`.
        let checked = Atomic<Int>(0)
    }

    /// What the thread holds: the index it checks (kept alive by it) and the shared progress.
    private final class Work: Sendable {
        let index: RawRowIndex
        let readsStorage: Bool
        let copying: SlotsInMemory?
        let progress: Progress

        init(index: RawRowIndex, readsStorage: Bool, copying: SlotsInMemory?, progress: Progress) {
            self.index = index
            self.readsStorage = readsStorage
            self.copying = copying
            self.progress = progress
        }

        /// The groups in memory first (no waiting on storage), then, if asked, the rest; then
        /// the slots copied, once every group is checked.
        func run() {
            let stop = { self.progress.stopping.load(ordering: .relaxed) }
            var groups = index.checkGroups(fromStorage: false, until: stop)
            if readsStorage && !index.everyGroupChecked { groups += index.checkGroups(fromStorage: true, until: stop) }
            if let copying, copying.fits {
                // Reads check groups too, and count them once their call's checks are done: up to
                // a second for the last of them (a damaged group never comes).
                for _ in 0..<100 where !index.everyGroupChecked && !stop() {
                    usleep(10_000)
                    groups += index.checkGroups(fromStorage: readsStorage, until: stop)
                }
                if index.everyGroupChecked { copying.fill(from: index, until: stop) }
            }
            progress.checked.store(groups, ordering: .relaxed)
            progress.finished.store(true, ordering: .releasing)
        }
    }

    /// Whether the thread has finished its pass (or was stopped).
    var isFinished: Bool { progress.finished.load(ordering: .acquiring) }

    /// The groups the thread checked, once it has finished; nil before.
    var groupsChecked: Int? { isFinished ? progress.checked.load(ordering: .relaxed) : nil }

    /// Asks the thread to stop and waits for it (at most a shard's checks); in a process forked
    /// since it started, where the thread does not exist, does not wait.
    deinit {
        progress.stopping.store(true, ordering: .relaxed)
        if getpid() == owner { pthread_join(thread, nil) }
    }
}
