// Filter pruning: remove a fraction of the filters of each residual block's inner convolutions,
// ranked by the L1 norm of their weights (Li et al. 2017, "Pruning Filters for Efficient
// ConvNets") or by a first-order Taylor estimate of how much the loss changes without them
// (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning").
//
// Only convolutions whose output reaches exactly one other convolution through channel-wise
// nodes (norm, activation, scalar bias) are pruned: inside a residual block. The channels that a
// residual addition joins stay, so the additions keep their shapes, as Li et al. prune ResNets.

/// How filters are ranked for pruning.
public enum PruningCriterion: String, Sendable, CaseIterable {
    /// The L1 norm of each filter's weights (Li et al. 2017).
    case l1
    /// (sum over the filter's parameters of gradient x value)^2, averaged over minibatches
    /// (Molchanov et al. 2019). With a batch norm after the convolution the parameters are the
    /// norm's scale and shift, the paper's choice for ResNets: zeroing them removes the channel
    /// exactly as pruning does; without one, the filter's weights and bias.
    case taylor
}

/// A convolution that can lose filters: its output goes through `path` (channel-wise nodes)
/// into `consumer`, another convolution, and nowhere else.
public struct PrunableConvolution: Sendable, Equatable {
    public let node: Int
    public let path: [Int]
    public let consumer: Int
}

/// Which filters each pruned convolution keeps (by node name, sorted indices).
public struct PruningPlan: Sendable, Equatable {
    public var keep: [String: [Int]]

    public init(keep: [String: [Int]]) { self.keep = keep }
}

extension Graph {
    /// The convolutions filter pruning may narrow, in node order (see `PrunableConvolution`).
    public var prunableConvolutions: [PrunableConvolution] {
        var consumers = [[Int]](repeating: [], count: shapes.count)
        for (k, node) in nodes.enumerated() { for v in node.inputs { consumers[v.index].append(k) } }
        var result: [PrunableConvolution] = []
        for (k, node) in nodes.enumerated() {
            guard case let .conv(c, _) = node.operation, c.groups == 1 else { continue }
            var v = node.output, path: [Int] = []
            while consumers[v.index].count == 1 {
                let next = consumers[v.index][0]
                switch nodes[next].operation {
                case .batchNorm, .relu, .prelu, .dropout, .scalarAffine(scale: false, bias: true):
                    path.append(next)
                    v = nodes[next].output
                    continue
                case let .conv(d, _) where d.groups == 1 && nodes[next].inputs == [v]:
                    result.append(PrunableConvolution(node: k, path: path, consumer: next))
                default:
                    break
                }
                break
            }
        }
        return result
    }

    /// The filters to keep: from each prunable convolution, the `fraction` (rounded, at least
    /// one filter left) with the lowest `importance` (one array per convolution, by node name,
    /// one score per filter) go.
    public func pruningPlan(fraction: Double, importance: [String: [Double]]) throws(CLNetError) -> PruningPlan {
        guard (0..<1).contains(fraction) else { throw .invalidArgument("the pruning fraction must be in [0, 1), not \(fraction)") }
        try refuseSharedParameters("filter pruning")
        var keep: [String: [Int]] = [:]
        for p in prunableConvolutions {
            let name = nodes[p.node].name, filters = shape(of: nodes[p.node].output).c
            guard let scores = importance[name], scores.count == filters else {
                throw .invalidShape(operation: "pruning \(name)", message: "needs one importance score per filter (\(filters))")
            }
            let removed = min(filters - 1, Int((fraction * Double(filters)).rounded()))
            // Ties keep the earlier filter, so the plan does not depend on the sort's stability.
            let ranked = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
            keep[name] = Array(ranked.prefix(filters - removed)).sorted()
        }
        return PruningPlan(keep: keep)
    }

    /// L1 importance: each filter's sum of |weight|.
    public func l1Importance(_ values: [String: [Float]]) throws(CLNetError) -> [String: [Double]] {
        var result: [String: [Double]] = [:]
        for p in prunableConvolutions {
            let node = nodes[p.node], filters = shape(of: node.output).c
            let w = try checkedParameter(node.parameters[0], in: values, for: "pruning")
            let per = w.count / filters
            result[node.name] = (0..<filters).map { f in w[(f * per)..<((f + 1) * per)].reduce(0) { $0 + Double(abs($1)) } }
        }
        return result
    }

    /// One minibatch's Taylor importance (see `PruningCriterion.taylor`) from parameter values
    /// and gradients by name; average it over minibatches.
    public func taylorImportance(values: [String: [Float]], gradients: [String: [Float]]) throws(CLNetError) -> [String: [Double]] {
        var result: [String: [Double]] = [:]
        for p in prunableConvolutions {
            let node = nodes[p.node], filters = shape(of: node.output).c
            let norm = p.path.first { if case .batchNorm = nodes[$0].operation { true } else { false } }
            // The norm's scale and shift, or the convolution's weight (and bias).
            let owners = norm.map { Array(nodes[$0].parameters.prefix(2)) } ?? node.parameters
            var sums = [Double](repeating: 0, count: filters)
            for i in owners {
                let w = try checkedParameter(i, in: values, for: "pruning"), g = try checkedParameter(i, in: gradients, for: "pruning")
                let per = w.count / filters
                for j in w.indices { sums[j / per] += Double(w[j]) * Double(g[j]) }
            }
            result[node.name] = sums.map { $0 * $0 }
        }
        return result
    }

    /// The pruned graph's parameters from this graph's: each pruned convolution keeps its plan's
    /// filters (weight rows and bias), the channel-wise nodes after it the same channels, and its
    /// consumer the same input channels. `pruned` must be this graph with those widths (built
    /// from the specification with `mid=`); a shape that does not follow throws.
    public func prunedParameters(_ plan: PruningPlan, _ values: [String: [Float]], pruned: Graph) throws(CLNetError) -> [String: [Float]] {
        var rows: [String: [Int]] = [:], columns: [String: [Int]] = [:]
        for p in prunableConvolutions {
            guard let keep = plan.keep[nodes[p.node].name] else { continue }
            // The convolution's weight rows and bias, the per-channel parameters after it (norm,
            // PReLU); scalars (Fixup's biases) stay whole.
            let c = shape(of: nodes[p.node].output).c
            guard !keep.isEmpty, Set(keep).count == keep.count, keep.allSatisfy({ (0..<c).contains($0) }) else {
                throw .invalidArgument("the pruning plan for \(nodes[p.node].name) must keep distinct filters among its \(c), at least one")
            }
            for i in nodes[p.node].parameters { rows[parameters[i].name] = keep }
            for k in p.path { for i in nodes[k].parameters where parameters[i].shape.dims == [c] { rows[parameters[i].name] = keep } }
            columns[parameters[nodes[p.consumer].parameters[0]].name] = keep
        }
        var out: [String: [Float]] = [:]
        for q in pruned.parameters {
            guard let i = parameterIndex(q.name) else {
                throw .invalidShape(operation: "pruning", message: "the pruned model has \(q.name), which the original lacks")
            }
            let p = parameters[i]
            var v = try checkedParameter(i, in: values, for: "pruning"), dims = p.shape.dims
            if let keep = rows[p.name] {
                let per = v.count / dims[0]
                var sliced: [Float] = []
                for f in keep { sliced += v[(f * per)..<((f + 1) * per)] }
                v = sliced
                dims[0] = keep.count
            }
            if let keep = columns[p.name], dims.count >= 2 {
                let inner = dims.dropFirst(2).reduce(1, *), width = dims[1]
                var sliced: [Float] = []
                sliced.reserveCapacity(dims[0] * keep.count * inner)
                for o in 0..<dims[0] {
                    for c in keep {
                        let start: Int = (o * width + c) * inner
                        sliced += v[start..<(start + inner)]
                    }
                }
                v = sliced
                dims[1] = keep.count
            }
            guard dims == q.shape.dims else {
                throw .invalidShape(operation: "pruning \(p.name)", message: "pruned to \(Shape(dims)), but the pruned model needs \(q.shape); do the model's mid widths match the plan?")
            }
            out[q.name] = v
        }
        return out
    }

    /// The `mid=` widths of the pruned model: each residual block's kept filters, taken from
    /// its first prunable convolution (`<block>.conv1`).
    public func prunedBlockWidths(_ plan: PruningPlan) -> [Int] {
        prunableConvolutions.compactMap { p in
            let name = nodes[p.node].name
            return name.hasSuffix(".conv1") ? plan.keep[name]?.count : nil
        }
    }
}
