import Foundation

/// A value behind a pthread mutex: the one lock type of the package.
///
/// Used instead of `Synchronization.Mutex`, whose futex-based lock ThreadSanitizer does not
/// see (it intercepts pthread locks), so `Tools/sanitize.sh` checks this code's ordering.
package final class Locked<Value>: @unchecked Sendable {
    // Invariant: `value` is only touched between pthread_mutex_lock and unlock.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    package init(_ value: Value) {
        pthread_mutex_init(mutex, nil)
        self.value = value
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    package func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// The first error thrown by any worker of a parallel loop.
package final class FirstError: Sendable {
    private let stored = Locked<(any Error)?>(nil)

    package init() {}

    package func record(_ error: any Error) {
        stored.withLock { if $0 == nil { $0 = error } }
    }

    package var error: (any Error)? { stored.withLock { $0 } }
}
