import CPKMStore
import _MemorySupport

/// The objects behind the C API's handles: numbers, never pointers, so that a closed or
/// made-up handle is an error the caller sees rather than memory the library reads.
final class HandleTable<Object: AnyObject & Sendable>: Sendable {
    private let objects = Locked<(next: UInt64, open: [UInt64: Object])>((1, [:]))
    private let kind: String

    init(kind: String) { self.kind = kind }

    /// A new handle for `object`; the table holds it until `remove`.
    func insert(_ object: Object) -> UInt64 {
        objects.withLock { table in
            let handle = table.next
            table.next += 1
            table.open[handle] = object
            return handle
        }
    }

    /// The object of `handle`, kept alive by the caller for the rest of its call.
    func object(_ handle: UInt64) throws -> Object {
        guard let object = objects.withLock({ $0.open[handle] }) else { throw CAPIError.handle("no open \(kind) has handle \(handle)") }
        return object
    }

    func remove(_ handle: UInt64) throws {
        guard objects.withLock({ $0.open.removeValue(forKey: handle) }) != nil else {
            throw CAPIError.handle("no open \(kind) has handle \(handle)")
        }
    }
}
