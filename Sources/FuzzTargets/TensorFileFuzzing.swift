import Foundation
import TensorFiles

/// Fuzzing entry points for the safetensors and `.npy` readers (see MemoryStore's
/// `DecoderFuzzing`). The readers work on files, so each input goes through one scratch file
/// per process.
package enum TensorFileFuzzing {
    private static let scratch = NSTemporaryDirectory() + "pkm-fuzz-\(getpid()).bin"

    /// A safetensors file: header, then every tensor it lists.
    package static func safetensors(_ bytes: UnsafeRawBufferPointer) {
        guard write(bytes), let file = try? SafetensorsFile(path: scratch) else { return }
        for entry in file.entries { check(entry) }
    }

    /// A `.npy` file.
    package static func npy(_ bytes: UnsafeRawBufferPointer) {
        guard write(bytes), let entry = try? NPYFile.entry(path: scratch, name: "fuzz") else { return }
        check(entry)
    }

    private static func check(_ entry: TensorEntry) {
        guard let tensor = try? entry.load() else { return }
        precondition(tensor.bytes.count == tensor.elementCount * tensor.dtype.size, "a loaded tensor's data disagrees with its shape")
    }

    private static func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        FileManager.default.createFile(atPath: scratch, contents: Data(bytes))
    }

    /// One valid file of each kind, from which mutations start.
    package static func seeds() -> [String: [UInt8]] {
        let header = #"{"__metadata__":{"topk":"4"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"m":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}"#
        var st = [UInt8]()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { st += $0 }
        st += Array(header.utf8) + (0..<40).map { UInt8($0) }
        var dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
        dict += String(repeating: " ", count: 128 - 10 - dict.utf8.count - 1) + "\n"
        var npy: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        withUnsafeBytes(of: UInt16(dict.utf8.count).littleEndian) { npy += $0 }
        npy += Array(dict.utf8)
        for v in 0..<6 { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { npy += $0 } }
        return ["safetensors": st, "npy": npy]
    }
}
