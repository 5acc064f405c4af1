// Batch-norm folding for inference: a convolution followed by batch norm with fixed statistics
// is one affine map per output channel, so it can be one convolution with a bias. The graph
// loses a pass over every activation it normalised.

/// A graph rewritten for deployment, with the map from the original's values to its own.
public struct FoldedGraph: Sendable {
    public let graph: Graph
    /// For each value of the original graph, the value that holds it in `graph` (nil for the
    /// convolution outputs that folding removed).
    public let values: [Value?]
    /// The folded pairs: (convolution node, batch-norm node) of the original graph.
    public let pairs: [(conv: Int, norm: Int)]
}

extension Graph {
    /// The graph with every batch norm that directly follows a convolution (as that
    /// convolution's only consumer) folded into it: the convolution gets a bias (`<conv>.bias`),
    /// and a ReLU fused into the norm becomes a ReLU node named `<norm>.relu`. Other nodes,
    /// names and parameters are kept. `foldBatchNormParameters` maps the weights.
    public func foldingBatchNorms() throws(CLNetError) -> FoldedGraph {
        try refuseSharedParameters("folding batch norms")
        var consumers = [Int](repeating: 0, count: shapes.count)
        for node in nodes { for v in node.inputs { consumers[v.index] += 1 } }
        var normOf: [Int: Int] = [:], folded: Set<Int> = []
        for (j, node) in nodes.enumerated() {
            guard case .batchNorm = node.operation, let k = producers[node.inputs[0].index],
                  case .conv = nodes[k].operation, consumers[node.inputs[0].index] == 1,
                  shape(of: node.inputs[0]).rank == 4 else { continue }
            normOf[k] = j
            folded.insert(j)
        }
        var b = GraphBuilder()
        var map = [Value?](repeating: nil, count: shapes.count)
        for (name, v) in inputs { map[v.index] = try b.input(name, shape: shape(of: v)) }
        for (k, node) in nodes.enumerated() where !folded.contains(k) {
            let xs = node.inputs.map { map[$0.index]! }
            if let j = normOf[k], case let .conv(conv, _) = node.operation, case let .batchNorm(relu, _, _) = nodes[j].operation {
                var y = try b.conv(xs[0], conv, bias: true, name: node.name)
                if relu { y = try b.relu(y, name: "\(nodes[j].name).relu") }
                map[nodes[j].output.index] = y
            } else {
                map[node.output.index] = try b.replay(node, of: self, inputs: xs)
            }
        }
        return FoldedGraph(graph: b.graph, values: map, pairs: normOf.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    /// The folded graph's parameters from this graph's: each folded convolution's weight scaled
    /// per output channel by gamma / sqrt(running_var + eps), its bias beta - running_mean x that
    /// scale (plus its own bias, scaled); every other parameter as it is.
    public func foldBatchNormParameters(_ fold: FoldedGraph, _ values: [String: [Float]]) throws(CLNetError) -> [String: [Float]] {
        func value(_ p: Int) throws(CLNetError) -> [Float] { try checkedParameter(p, in: values, for: "folding batch norm") }
        var out: [String: [Float]] = [:]
        var consumed: Set<Int> = []
        for (k, j) in fold.pairs {
            let conv = nodes[k], norm = nodes[j]
            guard case let .conv(c, hasBias) = conv.operation else { continue }
            let (scale, shift) = try batchNormAffine(j, values, for: "folding batch norm")
            let weight = try value(conv.parameters[0])
            let oldBias = hasBias ? try value(conv.parameters[1]) : [Float](repeating: 0, count: c.outChannels)
            let per = weight.count / c.outChannels
            out[parameters[conv.parameters[0]].name] = weight.indices.map { Float(Double(weight[$0]) * scale[$0 / per]) }
            out["\(conv.name).bias"] = (0..<c.outChannels).map { Float(shift[$0] + Double(oldBias[$0]) * scale[$0]) }
            consumed.formUnion(conv.parameters + norm.parameters)
        }
        for (i, p) in parameters.enumerated() where !consumed.contains(i) { out[p.name] = try value(i) }
        return out
    }

    /// Batch-norm node `norm`'s inference map, y = scale * x + shift per channel, from its
    /// weight, bias and running statistics in `values`: in Double, so that folding and merging
    /// add no rounding of their own beyond the final Float.
    func batchNormAffine(_ norm: Int, _ values: [String: [Float]], for operation: String)
        throws(CLNetError) -> (scale: [Double], shift: [Double]) {
        guard case let .batchNorm(_, eps, _) = nodes[norm].operation else {
            throw .invalidGraph("\(operation): node \(nodes[norm].name) is not a batch norm")
        }
        let p = try nodes[norm].parameters.map { i throws(CLNetError) in try checkedParameter(i, in: values, for: operation).map(Double.init) }
        let scale = (0..<p[0].count).map { p[0][$0] / (p[3][$0] + Double(eps)).squareRoot() }
        return (scale, (0..<p[0].count).map { p[1][$0] - p[2][$0] * scale[$0] })
    }
}
