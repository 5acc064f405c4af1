// What each node of a graph costs in arithmetic and memory traffic: the yardstick that turns a
// measured time into GFLOP/s and GB/s (clnet-bench), and that pruning reports FLOPs with.

/// Floating-point operations and the least memory traffic of a piece of work.
///
/// The traffic counts every tensor the work must read or write once, in Float32: what a
/// perfectly fused kernel would move. Real kernels move more (im2col columns, two passes of batch
/// norm), so GB/s computed from it is a lower bound of what the device moved.
public struct WorkCost: Sendable, Equatable, Codable {
    public var flops: Double
    public var bytes: Double

    public init(flops: Double = 0, bytes: Double = 0) {
        self.flops = flops
        self.bytes = bytes
    }

    public static func + (a: WorkCost, b: WorkCost) -> WorkCost { WorkCost(flops: a.flops + b.flops, bytes: a.bytes + b.bytes) }

    /// Operations per byte moved.
    public var intensity: Double { bytes > 0 ? flops / bytes : .infinity }
}

/// A node's cost in a training step: its forward pass, its backward pass (the input gradient
/// where an input needs one, and the parameter gradients) and the SGD update of its parameters.
public struct NodeCost: Sendable, Equatable, Codable {
    public var forward = WorkCost()
    public var backward = WorkCost()
    public var update = WorkCost()

    /// Forward only for inference; all three for training.
    public func total(training: Bool) -> WorkCost { training ? forward + backward + update : forward }
}

extension Graph {
    /// The cost of node `k` (see `WorkCost` for what is counted). Multiply-adds count as two
    /// operations, as GEMM rates do.
    public func cost(of k: Int) -> NodeCost {
        let node = nodes[k]
        let input = shape(of: node.inputs[0]), output = shape(of: node.output)
        let params = node.parameters.reduce(0.0) { $0 + Double(parameters[$1].shape.count) }
        let trainable = node.parameters.reduce(0.0) { $0 + (parameters[$1].trainable ? Double(parameters[$1].shape.count) : 0) }
        // An image fed to the graph needs no gradient.
        let needsInputGradient = !inputs.contains { $0.value == node.inputs[0] }
        let passes = node.operation.passCosts(
            x: Double(input.count), y: Double(output.count),
            inputs: node.inputs.reduce(0.0) { $0 + Double(shape(of: $1).count) }, params: params, trainable: trainable,
            dx: needsInputGradient ? Double(input.count) : 0, macs: node.operation.multiplyAdds(input: input, output: output))
        // SGD with momentum and weight decay: read weight, gradient and momentum, write weight and momentum.
        return NodeCost(forward: passes.forward, backward: passes.backward,
                        update: WorkCost(flops: 4 * trainable, bytes: 5 * trainable * 4))
    }

    /// The whole graph's cost per step, summed over nodes.
    public func cost(training: Bool) -> WorkCost {
        nodes.indices.reduce(WorkCost()) { $0 + cost(of: $1).total(training: training) }
    }
}
