import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// How benchmark queries are drawn.
public enum QueryDistribution: Sendable, Equatable {
    /// Independent N(0, 1) queries: slot access spread evenly, the worst case for caches.
    case uniform
    /// Queries around `centres` random N(0, 1) centres with N(0, spread²) noise: the skewed
    /// slot access that trained memories show.
    case clustered(centres: Int, spread: Float)
    /// Queries read from a file, replayed in order.
    case replay([Float])
}

/// Deterministic query batches `[B, H, 2, d]` for benchmarks.
public struct QueryGenerator: Sendable {
    public let width: Int
    public let distribution: QueryDistribution
    private var rng: SeededGenerator
    private let centres: [[Float]]
    private var replayed = 0

    public init(config: RetrievalConfig, distribution: QueryDistribution, seed: UInt64) {
        width = config.heads * 2 * config.keyDim
        self.distribution = distribution
        rng = SeededGenerator(seed: seed)
        var centreRNG = SeededGenerator(seed: seed ^ 0xC3A7_2E5D)
        if case .clustered(let n, _) = distribution {
            centres = (0..<n).map { _ in (0..<config.heads * 2 * config.keyDim).map { _ in centreRNG.normal() } }
        } else {
            centres = []
        }
    }

    /// The next `batch` queries.
    public mutating func next(batch: Int) -> [Float] {
        switch distribution {
        case .uniform:
            return (0..<(batch * width)).map { _ in rng.normal() }
        case .clustered(_, let spread):
            var out = [Float]()
            out.reserveCapacity(batch * width)
            for _ in 0..<batch {
                let centre = centres[Int(rng.next() % UInt64(centres.count))]
                for x in centre { out.append(x + spread * rng.normal()) }
            }
            return out
        case .replay(let all):
            let count = all.count / width
            var out = [Float]()
            out.reserveCapacity(batch * width)
            for _ in 0..<batch {
                let q = replayed % count
                out.append(contentsOf: all[(q * width)..<((q + 1) * width)])
                replayed += 1
            }
            return out
        }
    }
}

extension MemoryLayer {
    /// Gate inputs `[batch, gateDim]` for a benchmark of a gated layer (nil for another): every
    /// element ±1/√g in a fixed pattern, so that gate dots of N(0, σ²) rows stay of order σ.
    public func benchmarkGateInputs(batch: Int) -> [Float]? {
        let g = config.gateDim
        guard g > 0 else { return nil }
        let scale = 1 / Float(g).squareRoot()
        return (0..<(batch * g)).map { ($0 * 2_654_435_761 >> 7) & 1 == 0 ? scale : -scale }
    }
}
