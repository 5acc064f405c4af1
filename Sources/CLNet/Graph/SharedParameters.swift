// Weight sharing: one parameter used by several nodes, as a PyTorch module called more than once
// (DRRN's recursive block applies the same units B times). The parameter's gradient is the sum
// over its uses: the first backward step to reach it writes it, each later one adds its own,
// and the optimizer updates it once, after the last.

extension GraphBuilder {
    /// Applies node `original` again, to `inputs` of the same shapes: the same operation and the
    /// same parameters, not copies. The new node's gradient adds to the shared parameters'.
    public mutating func reapply(_ original: String, to inputs: [Value], name: String) throws(CLNetError) -> Value {
        guard let node = graph.nodes.first(where: { $0.name == original }) else {
            throw .invalidShape(operation: "node \(name)", message: "there is no node \(original) to apply again")
        }
        try require(!node.operation.isLoss, name, "cannot apply the loss \(original) again")
        if case .scalarAffine = node.operation {
            // Its kernels read the scale and bias as one pair of neighbours in the parameter arena.
            try require(false, name, "scalar-affine nodes (\(original)) cannot share their parameters")
        }
        try require(inputs.count == node.inputs.count && zip(inputs, node.inputs).allSatisfy { shape($0) == graph.shape(of: $1) },
                    name, "applies \(original) to \(inputs.map { shape($0) }), but it takes \(node.inputs.map { graph.shape(of: $0) })")
        let params = node.parameters.map { i in
            (graph.parameters[i].name, graph.parameters[i].shape, graph.parameters[i].role, graph.parameters[i].initialization)
        }
        return try appendNode(name, node.operation, inputs, graph.shape(of: node.output), initialized: params, sharing: true)
    }
}

extension Graph {
    /// The nodes that use each parameter, by parameter index, in graph order.
    public var parameterUses: [[Int]] {
        var uses = [[Int]](repeating: [], count: parameters.count)
        for (k, node) in nodes.enumerated() { for i in Set(node.parameters) { uses[i].append(k) } }
        return uses
    }

    /// Whether some parameter is used by more than one node.
    public var sharesParameters: Bool { parameterUses.contains { $0.count > 1 } }

    /// Refuses a graph that shares parameters, for a rewrite that changes one node's parameters
    /// as if they were its own (pruning, folding a norm into a convolution).
    func refuseSharedParameters(_ rewrite: String) throws(CLNetError) {
        let uses = parameterUses
        if let i = uses.indices.first(where: { uses[$0].count > 1 }) {
            throw .invalidGraph("""
                \(rewrite): parameter \(parameters[i].name) is shared by \(uses[i].count) nodes \
                (\(uses[i].map { nodes[$0].name }.joined(separator: ", "))); this rewrite would change every use, so it refuses
                """)
        }
    }
}

/// How the backward pass builds the gradient of each trainable parameter: which node's step
/// writes it first, which add to it, and after which node's step it is final and the update runs.
public struct ParameterGradients: Sendable {
    /// A use of parameter `parameter` by node `node`.
    struct Use: Hashable, Sendable { let node: Int, parameter: Int }

    /// The uses whose step adds to a gradient that an earlier step of the backward pass wrote.
    let accumulating: Set<Use>
    /// The node whose backward step finishes each parameter's gradient, by parameter index.
    let finishingNode: [Int: Int]

    init(graph: Graph, steps: [BackwardStep]) {
        var seen: Set<Int> = [], adds: Set<Use> = [], last: [Int: Int] = [:]
        for step in steps {
            for i in Set(graph.nodes[step.node].parameters) where graph.parameters[i].trainable {
                if !seen.insert(i).inserted { adds.insert(Use(node: step.node, parameter: i)) }
                last[i] = step.node
            }
        }
        accumulating = adds
        finishingNode = last
    }

    /// Whether node `node`'s step adds parameter `parameter`'s gradient to an earlier one.
    func accumulates(node: Int, parameter: Int) -> Bool { accumulating.contains(Use(node: node, parameter: parameter)) }

    /// The parameters whose gradients some step adds to: each needs a buffer for the addend.
    var accumulatedParameters: Set<Int> { Set(accumulating.map(\.parameter)) }
}
