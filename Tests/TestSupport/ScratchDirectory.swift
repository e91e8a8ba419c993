import Foundation

/// A fresh directory under the temporary directory, removed with everything in it when the
/// value is released: the one scratch space of every test target.
package final class ScratchDirectory {
    package let path: String

    package init() {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("pkm-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The path of `name` inside the directory.
    package func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}
