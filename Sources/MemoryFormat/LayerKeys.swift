/// Where a store keeps one memory layer's retrieval record and tensors (Spec/FORMAT.md,
/// "Layers"): `meta/layers/NAME/retrieval` and tensors `layers/NAME/row_keys`, … from version 4;
/// `meta/retrieval` and unprefixed tensor names for the one layer of versions 1 to 3, which is
/// named ``defaultName``.
public struct LayerKeys: Sendable, Hashable {
    public let name: String
    /// What the layer's tensor names start with: `layers/NAME/`, or nothing before version 4.
    public let tensorPrefix: String
    /// The key of its retrieval record in `meta`.
    public let record: String

    /// The name a single-layer store's layer gets when none is given, and the name of the layer
    /// of a version 1-3 store.
    public static let defaultName = "default"
    /// Longest layer name, in bytes: with the prefix and the longest tensor name it stays far
    /// inside the 400-byte key limit.
    public static let maxNameBytes = 128
    package static let prefix = "layers/", recordSuffix = "/retrieval"

    /// The keys of layer `name` in a store of `formatVersion` (not validated: see ``validate(_:)``).
    public init(name: String, formatVersion: Int) {
        self.name = name
        if formatVersion >= 4 {
            tensorPrefix = Self.prefix + name + "/"
            record = Self.prefix + name + Self.recordSuffix
        } else {
            tensorPrefix = ""
            record = "retrieval"
        }
    }

    /// The stored name of the layer's tensor `base` (a name of Spec/RETRIEVAL.md, "Tensors").
    public func tensor(_ base: String) -> String { tensorPrefix + base }

    /// The layer a version-4 `meta` record key belongs to, when it is a layer's retrieval record.
    public static func layer(ofRecord key: String) -> String? {
        guard key.hasPrefix(prefix), key.hasSuffix(recordSuffix), key.utf8.count > prefix.utf8.count + recordSuffix.utf8.count else {
            return nil
        }
        let name = String(key.dropFirst(prefix.count).dropLast(recordSuffix.count))
        return (try? validate(name)) == nil ? nil : name
    }

    /// Refuses a name that is not 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`,
    /// starting with a letter, digit or `_` (so no `/`, `..`, spaces or control characters).
    public static func validate(_ name: String) throws(StoreError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw .invalidArgument("a layer name must not be empty") }
        guard bytes.count <= maxNameBytes else {
            throw .invalidArgument("a layer name is at most \(maxNameBytes) bytes (got \(bytes.count))")
        }
        func allowed(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D || b == 0x2E
        }
        guard bytes.allSatisfy(allowed), bytes[0] != 0x2E, bytes[0] != 0x2D else {
            throw .invalidArgument("layer name \(name.debugDescription) is not allowed: use ASCII letters, digits, '_', '-' and '.', starting with a letter, digit or '_'")
        }
    }
}
