import Foundation
import MemoryFormat
import TensorFiles

/// Loads a .npy written by numpy (or by memtool).
package func loadNPY(_ path: String) throws -> Tensor {
    try NPYFile.entry(path: path, name: (path as NSString).lastPathComponent).load()
}
