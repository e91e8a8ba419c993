import Foundation
import MemoryFormat
import _MemorySupport

/// A NumPy `.npy` file (format versions 1 to 3): little-endian, C order, numeric dtypes only.
/// Object arrays (pickles), Fortran order and big-endian data are refused by name.
public enum NPYFile {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
    /// Headers beyond this are refused before they are read (numpy's own are under 1 KiB for plain arrays).
    static let maxHeader = 1 << 20

    /// Reads and checks the header; the data is not read.
    public static func entry(path: String, name: String) throws -> TensorEntry {
        let file = try RandomAccessFile(path: path)
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, why) }
        guard file.size >= 10 else { throw bad("too short to be a .npy file (\(file.size) bytes)") }
        let prefix = try file.read(at: 0, count: 10)
        guard Array(prefix[0..<6]) == magic else { throw bad("not a .npy file (bad magic)") }
        let major = prefix[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(prefix[8]) | Int(prefix[9]) << 8
            headerStart = 10
        case 2, 3:
            guard file.size >= 12 else { throw bad("header length is truncated") }
            let b = try file.read(at: 8, count: 4)
            headerLength = Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24
            headerStart = 12
        default:
            throw bad("unsupported .npy format version \(major)")
        }
        guard headerLength <= maxHeader else { throw bad("header of \(headerLength) bytes exceeds the \(maxHeader)-byte limit") }
        guard headerLength <= file.size - headerStart else { throw bad("header runs past the end of the file") }
        let header = String(decoding: try file.read(at: headerStart, count: headerLength), as: UTF8.self)
        let fields = try parseHeader(header, path: path)
        guard let descr = fields.descr else { throw bad("header has no 'descr'") }
        guard let shape = fields.shape else { throw bad("header has no 'shape'") }
        guard fields.fortranOrder == false else {
            throw bad(fields.fortranOrder == nil ? "header has no 'fortran_order'" : "Fortran-order arrays are not supported; save with np.ascontiguousarray")
        }
        let dtype = try dtype(descr, path: path)
        let dataStart = headerStart + headerLength
        guard let count = checkedProduct(shape + [dtype.size]) else { throw bad("shape \(shape) is too large") }
        guard count == file.size - dataStart else {
            throw bad("shape \(shape) of \(descr) needs \(count) data bytes, the file holds \(file.size - dataStart)")
        }
        return TensorEntry(name: name, dtype: dtype, shape: shape, offset: dataStart, byteCount: count, path: path)
    }

    private static func dtype(_ descr: String, path: String) throws -> ElementType {
        switch descr {
        case "<f4": return .f32
        case "<f2": return .f16
        case "<i8": return .i64
        case "<i4": return .i32
        case "|u1", "<u1": return .u8
        case "|i1", "<i1": return .i8
        case "<V2", "|V2": return .bf16  // ml_dtypes' bfloat16 saves as 2-byte void
        default:
            if descr.contains("O") { throw TensorFileError(path, "object arrays (pickled Python objects) are refused") }
            if descr.hasPrefix(">") { throw TensorFileError(path, "big-endian dtype '\(descr)' is not supported") }
            if descr == "<f8" { throw TensorFileError(path, "float64 is not supported: save the array with .astype(numpy.float32)") }
            throw TensorFileError(path, "unsupported dtype '\(descr)' (use float32, float16, bfloat16, int64, int32, uint8 or int8)")
        }
    }

    struct HeaderFields {
        var descr: String?
        var fortranOrder: Bool?
        var shape: [Int]?
    }

    /// Parses the Python dict literal of a .npy header: string keys, a string, a bool and a tuple of ints.
    static func parseHeader(_ text: String, path: String) throws -> HeaderFields {
        var fields = HeaderFields()
        var s = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, "malformed header: \(why)") }
        guard s.first == "{", s.last == "}" else { throw bad("not a dict") }
        s = s.dropFirst().dropLast()
        func skipSpace() { while let c = s.first, c == " " || c == "," || c == "\n" { s = s.dropFirst() } }
        func quoted() throws -> String {
            guard let q = s.first, q == "'" || q == "\"" else { throw bad("expected a quoted string") }
            s = s.dropFirst()
            guard let end = s.firstIndex(of: q) else { throw bad("unterminated string") }
            let value = String(s[..<end])
            s = s[s.index(after: end)...]
            return value
        }
        skipSpace()
        while !s.isEmpty {
            let key = try quoted()
            skipSpace()
            guard s.first == ":" else { throw bad("expected ':' after '\(key)'") }
            s = s.dropFirst()
            while s.first == " " { s = s.dropFirst() }
            switch key {
            case "descr":
                guard s.first == "'" || s.first == "\"" else { throw bad("'descr' is not a string (structured dtypes are not supported)") }
                fields.descr = try quoted()
            case "fortran_order":
                if s.hasPrefix("True") { fields.fortranOrder = true; s = s.dropFirst(4) }
                else if s.hasPrefix("False") { fields.fortranOrder = false; s = s.dropFirst(5) }
                else { throw bad("'fortran_order' is not True or False") }
            case "shape":
                guard s.first == "(" , let close = s.firstIndex(of: ")") else { throw bad("'shape' is not a tuple") }
                let inner = s[s.index(after: s.startIndex)..<close]
                var dims: [Int] = []
                for part in inner.split(separator: ",") {
                    let t = part.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "L", with: "")
                    if t.isEmpty { continue }
                    guard let d = Int(t), d >= 0 else { throw bad("shape entry '\(t)' is not a non-negative integer") }
                    dims.append(d)
                }
                guard dims.count <= 8 else { throw bad("rank \(dims.count) exceeds 8") }
                fields.shape = dims
                s = s[s.index(after: close)...]
            default:
                throw bad("unexpected key '\(key)'")
            }
            skipSpace()
        }
        return fields
    }

    /// Writes a C-order little-endian array (format version 1, header padded to 64 bytes), as an
    /// ``OutputFile`` (never over a store; complete or not at all).
    public static func write(path: String, dtype: ElementType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let descr: String
        switch dtype {
        case .f32: descr = "<f4"
        case .f16: descr = "<f2"
        case .bf16: descr = "<V2"
        case .i64: descr = "<i8"
        case .i32: descr = "<i4"
        case .u8: descr = "|u1"
        case .i8: descr = "|i1"
        }
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(\(shape.map(String.init).joined(separator: ", ")))"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = magic + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        out += Array(header.utf8)
        let file = try OutputFile(path: path)
        try file.write(Data(out))
        try file.write(bytes)
        try file.finish()
    }
}
