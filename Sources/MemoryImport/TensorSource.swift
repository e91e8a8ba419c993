import Foundation
import TensorFiles

/// Tensors a user brings: a safetensors file or a directory of `.npy` files named after the tensors.
public struct TensorSource: Sendable {
    public let path: String
    public let entries: [String: TensorEntry]
    public let metadata: [String: String]

    init(path: String, entries: [String: TensorEntry], metadata: [String: String]) {
        self.path = path
        self.entries = entries
        self.metadata = metadata
    }

    /// Opens `path` (a `.safetensors` file or a directory of `.npy` files), reading headers only.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorFileError(path, "no such file or directory")
        }
        self.path = path
        if isDirectory.boolValue {
            var entries: [String: TensorEntry] = [:]
            for file in try FileManager.default.contentsOfDirectory(atPath: path).sorted() where file.hasSuffix(".npy") {
                let name = String(file.dropLast(4))
                entries[name] = try NPYFile.entry(path: (path as NSString).appendingPathComponent(file), name: name)
            }
            guard !entries.isEmpty else { throw TensorFileError(path, "the directory holds no .npy files") }
            self.entries = entries
            metadata = [:]
        } else {
            if path.hasSuffix(".npy") {
                throw TensorFileError(path, "is one .npy file: import takes a .safetensors file or a directory of .npy files, one a tensor (values.npy, row_keys.npy, ...)")
            }
            let file = try SafetensorsFile(path: path)
            entries = Dictionary(file.entries.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            metadata = file.metadata
        }
    }
}
