import Foundation
import _MemorySupport

/// How slots are scored (Spec/RETRIEVAL.md, "Scoring").
public enum Scoring: String, Codable, Sendable, CaseIterable {
    /// Product keys: additive row and column scores, exact top-k.
    case pkm
    /// Tucker-decomposed scoring with rank-1 pre-selection of the top m rows and columns.
    case tucker
    /// Tucker scoring of every slot; for small grids and tests.
    case tuckerExact = "tucker-exact"
}

/// The function applied to the selected scores (Spec/RETRIEVAL.md, "Weights").
public enum Activation: String, Codable, Sendable, CaseIterable {
    case softmax, none, relu, sigmoid

    /// Applies the activation in place to `count` scores spaced `stride` apart.
    func apply(_ x: UnsafeMutablePointer<Float>, count: Int, stride: Int) {
        switch self {
        case .softmax:
            var top = -Float.infinity
            for s in 0..<count { top = max(top, x[s * stride]) }
            var sum: Float = 0
            for s in 0..<count {
                let e = exp(x[s * stride] - top)
                x[s * stride] = e
                sum += e
            }
            for s in 0..<count { x[s * stride] /= sum }
        case .none:
            break
        case .relu:
            for s in 0..<count { x[s * stride] = max(0, x[s * stride]) }
        case .sigmoid:
            for s in 0..<count { x[s * stride] = 1 / (1 + exp(-x[s * stride])) }
        }
    }
}

/// The function applied to a gated layer's gate dots before they scale the slots' weights
/// (Spec/RETRIEVAL.md, "Gates"): none, or GELU in its exact form x·Φ(x).
public enum GateActivation: String, Codable, Sendable, CaseIterable {
    case none, gelu

    /// The activation of one gate dot, computed in Double and rounded once.
    public func apply(_ x: Float) -> Float {
        switch self {
        case .none: x
        case .gelu: Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot())))
        }
    }
}

/// How a virtual slot maps to a physical row and projector (Spec/RETRIEVAL.md, "Addressing").
public enum Addressing: String, Codable, Sendable, CaseIterable {
    case identity, table, keyed
}

/// The hyper-parameters of a memory layer, named as in Spec/RETRIEVAL.md.
public struct RetrievalConfig: Codable, Sendable, Equatable {
    public var scoring: Scoring
    public var heads: Int
    public var keyDim: Int
    public var gridRows: Int
    public var gridCols: Int
    public var rank: Int
    public var cores: Int
    public var expansion: Int
    public var physicalRows: Int
    public var valueDim: Int
    public var outputDim: Int
    public var topK: Int
    public var topM: Int
    public var activation: Activation
    public var addressing: Addressing
    public var addressKey: UInt64
    /// Rows of the value table the layer reads (the pool), of which its `physicalRows` rows are
    /// a window starting at `poolOffset` (Spec/RETRIEVAL.md, "Addressing"); `physicalRows` when
    /// the layer reads a table of its own.
    public var poolRows: Int
    public var poolOffset: Int
    /// Elements of each table row after the `valueDim` values that form the slot's gate vector
    /// (0: the layer has no gate); the table's rows are `valueDim + gateDim` wide.
    public var gateDim: Int
    public var gateActivation: GateActivation

    public init(scoring: Scoring, heads: Int, keyDim: Int, gridRows: Int, gridCols: Int, rank: Int = 1, cores: Int = 1,
                expansion: Int = 1, physicalRows: Int, valueDim: Int, outputDim: Int? = nil, topK: Int, topM: Int = 0,
                activation: Activation = .softmax, addressing: Addressing = .identity, addressKey: UInt64 = 0,
                poolRows: Int? = nil, poolOffset: Int = 0, gateDim: Int = 0, gateActivation: GateActivation = .none) {
        self.scoring = scoring
        self.heads = heads
        self.keyDim = keyDim
        self.gridRows = gridRows
        self.gridCols = gridCols
        self.rank = rank
        self.cores = cores
        self.expansion = expansion
        self.physicalRows = physicalRows
        self.valueDim = valueDim
        self.outputDim = outputDim ?? valueDim
        self.topK = topK
        self.topM = topM
        self.activation = activation
        self.addressing = addressing
        self.addressKey = addressKey
        self.poolRows = poolRows ?? physicalRows
        self.poolOffset = poolOffset
        self.gateDim = gateDim
        self.gateActivation = gateActivation
    }

    private enum CodingKeys: String, CodingKey {
        case scoring, heads, keyDim, gridRows, gridCols, rank, cores, expansion, physicalRows, valueDim, outputDim, topK, topM
        case activation, addressing, addressKey, poolRows, poolOffset, gateDim, gateActivation
    }

    /// Decodes a retrieval record; records of format versions 1 to 3 have no pool fields (the
    /// layer reads its own table), and records of ungated layers no gate fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(scoring: try c.decode(Scoring.self, forKey: .scoring), heads: try c.decode(Int.self, forKey: .heads),
                  keyDim: try c.decode(Int.self, forKey: .keyDim), gridRows: try c.decode(Int.self, forKey: .gridRows),
                  gridCols: try c.decode(Int.self, forKey: .gridCols), rank: try c.decode(Int.self, forKey: .rank),
                  cores: try c.decode(Int.self, forKey: .cores), expansion: try c.decode(Int.self, forKey: .expansion),
                  physicalRows: try c.decode(Int.self, forKey: .physicalRows), valueDim: try c.decode(Int.self, forKey: .valueDim),
                  outputDim: try c.decode(Int.self, forKey: .outputDim), topK: try c.decode(Int.self, forKey: .topK),
                  topM: try c.decode(Int.self, forKey: .topM), activation: try c.decode(Activation.self, forKey: .activation),
                  addressing: try c.decode(Addressing.self, forKey: .addressing), addressKey: try c.decode(UInt64.self, forKey: .addressKey),
                  poolRows: try c.decodeIfPresent(Int.self, forKey: .poolRows), poolOffset: try c.decodeIfPresent(Int.self, forKey: .poolOffset) ?? 0,
                  gateDim: try c.decodeIfPresent(Int.self, forKey: .gateDim) ?? 0,
                  gateActivation: try c.decodeIfPresent(GateActivation.self, forKey: .gateActivation) ?? .none)
    }

    /// Encodes a retrieval record; the gate fields only for a gated layer, so that an ungated
    /// layer's record is what readers from before gates read.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(scoring, forKey: .scoring); try c.encode(heads, forKey: .heads); try c.encode(keyDim, forKey: .keyDim)
        try c.encode(gridRows, forKey: .gridRows); try c.encode(gridCols, forKey: .gridCols); try c.encode(rank, forKey: .rank)
        try c.encode(cores, forKey: .cores); try c.encode(expansion, forKey: .expansion); try c.encode(physicalRows, forKey: .physicalRows)
        try c.encode(valueDim, forKey: .valueDim); try c.encode(outputDim, forKey: .outputDim); try c.encode(topK, forKey: .topK)
        try c.encode(topM, forKey: .topM); try c.encode(activation, forKey: .activation); try c.encode(addressing, forKey: .addressing)
        try c.encode(addressKey, forKey: .addressKey); try c.encode(poolRows, forKey: .poolRows); try c.encode(poolOffset, forKey: .poolOffset)
        if gateDim > 0 {
            try c.encode(gateDim, forKey: .gateDim)
            try c.encode(gateActivation, forKey: .gateActivation)
        }
    }

    /// Elements per row of the value table the layer reads: the values, then the gate vector.
    public var tableDim: Int { valueDim + gateDim }

    /// Whether the layer reads a window of a larger pool, or one shifted from its start.
    public var readsPoolWindow: Bool { poolRows != physicalRows || poolOffset != 0 }

    /// `n_row * n_col`.
    public var virtualSlots: Int { gridRows * gridCols }

    /// Limits of Spec/RETRIEVAL.md, "Errors": beyond them no layer fits a machine, and products
    /// of the parameters stay far from overflow.
    public static let maxHeads = 1 << 16, maxDim = 1 << 20, maxRank = 1 << 8, maxExpansion = 1 << 20
    public static let maxTensorBytes = 1 << 42

    /// Bytes of the f32 tensors a layer holds in memory (keys, cores, projectors, a `table` map
    /// as I64); nil when the product overflows.
    public var residentTensorBytes: Int? {
        let keys = checkedProduct(4, heads, rank, gridRows + gridCols, keyDim)
        let cores = scoring == .pkm ? 0 : checkedProduct(4, heads, self.cores, rank, rank)
        let projectors = expansion > 1 || outputDim != valueDim ? checkedProduct(4, expansion, valueDim, outputDim) : 0
        let map = addressing == .table ? checkedProduct(8, gridRows, gridCols) : 0
        guard let keys, let cores, let projectors, let map else { return nil }
        let (a, o1) = keys.addingReportingOverflow(cores)
        let (b, o2) = projectors.addingReportingOverflow(map)
        let (total, o3) = a.addingReportingOverflow(b)
        return o1 || o2 || o3 ? nil : total
    }

    /// Every parameter on one line, for people: what a layer answers with.
    public var summary: String {
        var parts = ["\(scoring.rawValue), H=\(heads) d=\(keyDim) k=\(topK)"]
        if scoring == .tucker { parts[0] += " m=\(topM)" }
        if scoring != .pkm { parts[0] += " r=\(rank) c=\(cores)" }
        parts.append("grid \(gridRows)x\(gridCols) = \(virtualSlots) virtual slots over \(physicalRows) rows x \(valueDim) (E=\(expansion))")
        parts.append("d_out=\(outputDim)")
        parts.append("activation \(activation.rawValue)")
        parts.append("addressing \(addressing.rawValue)\(addressing == .keyed ? " (key \(addressKey))" : "")")
        if readsPoolWindow { parts.append("a window of a \(poolRows)-row pool from row \(poolOffset)") }
        if gateDim > 0 { parts.append("gated by \(gateDim) columns (\(gateActivation.rawValue))") }
        return parts.joined(separator: ", ")
    }

    /// Checks every rule of Spec/RETRIEVAL.md, "Errors", that the parameters alone decide.
    public func validate() throws(RetrievalError) {
        func bad(_ field: String, _ why: String) -> RetrievalError { .invalidConfig(field: field, reason: why) }
        for (name, value) in [("heads", heads), ("keyDim", keyDim), ("gridRows", gridRows), ("gridCols", gridCols),
                              ("rank", rank), ("cores", cores), ("expansion", expansion), ("physicalRows", physicalRows),
                              ("valueDim", valueDim), ("outputDim", outputDim)] where value < 1 {
            throw bad(name, "must be at least 1 (got \(value))")
        }
        for (name, value, limit) in [("heads", heads, Self.maxHeads), ("keyDim", keyDim, Self.maxDim), ("rank", rank, Self.maxRank),
                                     ("cores", cores, Self.maxRank), ("expansion", expansion, Self.maxExpansion),
                                     ("physicalRows", physicalRows, 1 << 40), ("poolRows", poolRows, 1 << 40), ("valueDim", valueDim, Self.maxDim),
                                     ("outputDim", outputDim, Self.maxDim)] where value > limit {
            throw bad(name, "must be at most \(limit) (got \(value))")
        }
        guard gridRows <= 1 << 31, gridCols <= 1 << 31, gridRows.multipliedReportingOverflow(by: gridCols).overflow == false,
              virtualSlots <= 1 << 40 else {
            throw bad("gridRows", "a grid of \(gridRows) x \(gridCols) is larger than 2^40 slots")
        }
        guard virtualSlots == expansion * physicalRows else {
            throw bad("expansion", "n_row x n_col = \(virtualSlots) must equal expansion x physicalRows = \(expansion) x \(physicalRows)")
        }
        guard poolRows >= physicalRows else {
            throw bad("poolRows", "a window of \(physicalRows) rows does not fit a pool of \(poolRows)")
        }
        guard gateDim >= 0, gateDim <= Self.maxDim, tableDim <= Self.maxDim else {
            throw bad("gateDim", "must be in 0...\(Self.maxDim - valueDim) (got \(gateDim))")
        }
        guard poolOffset >= 0, poolOffset < poolRows else { throw bad("poolOffset", "must be in 0..<\(poolRows) (got \(poolOffset))") }
        guard valueDim % cores == 0 else { throw bad("cores", "valueDim \(valueDim) is not divisible by \(cores) cores") }
        guard let resident = residentTensorBytes, resident <= Self.maxTensorBytes else {
            throw bad("heads", "the keys, cores, projectors and map of these parameters exceed \(Self.maxTensorBytes >> 40) TiB")
        }
        guard topK >= 1, topK <= virtualSlots else { throw bad("topK", "must be in 1...\(virtualSlots) (got \(topK))") }
        switch scoring {
        case .pkm:
            guard rank == 1 else { throw bad("rank", "PKM scoring needs rank 1 (got \(rank))") }
            guard cores == 1 else { throw bad("cores", "PKM scoring needs 1 core (got \(cores))") }
        case .tucker:
            guard topM >= topK else { throw bad("topM", "m = \(topM) is smaller than k = \(topK)") }
            guard topM <= min(gridRows, gridCols) else {
                throw bad("topM", "m = \(topM) exceeds the grid's smaller side (\(min(gridRows, gridCols)))")
            }
        case .tuckerExact:
            break
        }
    }
}

/// What is wrong with a retrieval request, naming the field, tensor or query.
public enum RetrievalError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidConfig(field: String, reason: String)
    case tensorShape(name: String, expected: [Int], got: [Int])
    case missingTensor(String)
    case invalidTensor(name: String, reason: String)
    case queryShape(expected: String, got: Int)
    case nonFiniteQuery(query: Int, head: Int)

    public var description: String {
        switch self {
        case .invalidConfig(let field, let reason): "invalid retrieval parameter '\(field)': \(reason)"
        case .tensorShape(let name, let expected, let got): "tensor '\(name)' has shape \(got), expected \(expected)"
        case .missingTensor(let name): "tensor '\(name)' is required and missing"
        case .invalidTensor(let name, let reason): "tensor '\(name)' is invalid: \(reason)"
        case .queryShape(let expected, let got): "queries must be \(expected) floats; got \(got)"
        case .nonFiniteQuery(let b, let h): "query \(b), head \(h) contains NaN or infinity"
        }
    }
}
