import COpenBLAS
import Testing
@testable import MemoryRetrieval

@Suite struct BLASThreadTests {
    /// OpenBLAS's thread count belongs to the process: an embedder that asks the index to leave
    /// it alone keeps its own setting.
    @Test func anEmbeddersBLASSettingIsKeptWhenAsked() throws {
        let c = RetrievalConfig(scoring: .pkm, heads: 1, keyDim: 4, gridRows: 4, gridCols: 4, physicalRows: 16, valueDim: 2, topK: 2)
        let t = randomTensors(c, seed: 1)
        _ = try ProductKeyIndex(config: c, tensors: t, threads: 1)  // the default: one BLAS thread, set once per process
        #expect(openblas_get_num_threads() == 1)
        openblas_set_num_threads(2)
        defer { openblas_set_num_threads(1) }
        _ = try ProductKeyIndex(config: c, tensors: t, threads: 1, limitsBLASThreads: false)
        #expect(openblas_get_num_threads() == 2)
    }
}
