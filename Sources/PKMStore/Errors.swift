import CPKMStore
import Foundation
import MemoryRetrieval
import MemoryStore
import TensorFiles
import _MemorySupport

/// Failures of the C API itself: bad arguments, handles and buffers.
enum CAPIError: Error {
    case argument(String)
    case handle(String)
    case buffer(String)
}

/// Runs `body` and reports its outcome into `error` (when not NULL): the status code of the call.
func reporting(_ status: UnsafeMutablePointer<pkm_error>?, _ body: () throws -> Void) -> Int32 {
    do {
        try body()
        report(PKM_OK, "", into: status)
        return Int32(PKM_OK)
    } catch {
        let (code, message) = statusAndMessage(of: error)
        report(code, message, into: status)
        return Int32(code)
    }
}

/// The status code and the message of a thrown error.
func statusAndMessage(of error: any Error) -> (Int, String) {
    switch error {
    case CAPIError.argument(let why): return (PKM_ERR_ARGUMENT, why)
    case CAPIError.handle(let why): return (PKM_ERR_HANDLE, why)
    case CAPIError.buffer(let why): return (PKM_ERR_BUFFER, why)
    case let e as StoreError: return (code(of: e), e.description)
    case let e as RetrievalError: return (PKM_ERR_ARGUMENT, e.description)
    case let e as TensorFileError: return (PKM_ERR_INPUT, e.description)
    case let e as OutputFileError: return (e.refused ? PKM_ERR_ARGUMENT : PKM_ERR_STORAGE, e.description)
    case let e as LMDBError: return (PKM_ERR_STORAGE, e.description)
    default: return (PKM_ERR_STORAGE, "\(error)")
    }
}

private func code(of error: StoreError) -> Int {
    switch error {
    case .notFound, .tensorNotFound, .unknownLayer: PKM_ERR_NOT_FOUND
    case .unsupportedVersion, .noLayer: PKM_ERR_UNSUPPORTED
    case .badManifest, .inconsistent, .corruptShard, .missingShard, .corruptTensor, .corruptRecord, .codec: PKM_ERR_CORRUPT
    case .incomplete: PKM_ERR_INCOMPLETE
    case .diskFull: PKM_ERR_STORAGE
    case .notAStore, .rowOutOfRange, .invalidArgument, .layoutMismatch: PKM_ERR_ARGUMENT
    }
}

/// Writes `code` and `message` (UTF-8, truncated at a character boundary, NUL-terminated).
private func report(_ code: Int, _ message: String, into error: UnsafeMutablePointer<pkm_error>?) {
    guard let error else { return }
    error.pointee.code = Int32(code)
    withUnsafeMutableBytes(of: &error.pointee.message) { text in _ = writeText(message, into: text) }
}

/// Copies `text` into `buffer` as NUL-terminated UTF-8, cut at a character boundary if it does
/// not fit; returns the bytes the whole text needs, including the NUL.
@discardableResult
func writeText(_ text: String, into buffer: UnsafeMutableRawBufferPointer) -> Int {
    let bytes = Array(text.utf8)
    guard buffer.count > 0 else { return bytes.count + 1 }
    var n = min(bytes.count, buffer.count - 1)
    while n > 0 && n < bytes.count && bytes[n] & 0xC0 == 0x80 { n -= 1 }  // not inside a character
    for i in 0..<n { buffer[i] = bytes[i] }
    buffer[n] = 0
    return bytes.count + 1
}

/// A C string argument, or an argument error naming it.
func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws -> String {
    guard let pointer else { throw CAPIError.argument("\(name) is NULL") }
    return String(cString: pointer)
}

/// A pointer argument that must not be NULL (unless `count` is 0).
func required<T>(_ pointer: T?, _ name: String, count: Int = 1) throws -> T? {
    if pointer == nil && count > 0 { throw CAPIError.argument("\(name) is NULL") }
    return pointer
}

/// A size_t argument, refused when it does not fit the API's signed sizes.
func size(_ value: Int, _ name: String) throws -> Int {
    guard value >= 0 else { throw CAPIError.argument("\(name) is too large (\(UInt(bitPattern: value)))") }
    return value
}
