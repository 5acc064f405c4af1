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
        let f = 4.0
        let x = Double(shape(of: node.inputs[0]).count), y = Double(shape(of: node.output).count)
        let inputsCount = node.inputs.reduce(0.0) { $0 + Double(shape(of: $1).count) }
        let params = node.parameters.reduce(0.0) { $0 + Double(parameters[$1].shape.count) }
        let trainable = node.parameters.reduce(0.0) { $0 + (parameters[$1].trainable ? Double(parameters[$1].shape.count) : 0) }
        // An image fed to the graph needs no gradient.
        let needsInputGradient = !inputs.contains { $0.value == node.inputs[0] }
        let dx = needsInputGradient ? x : 0
        var cost = NodeCost()
        // SGD with momentum and weight decay: read weight, gradient and momentum, write weight and momentum.
        cost.update = WorkCost(flops: 4 * trainable, bytes: 5 * trainable * f)
        switch node.operation {
        case let .conv(conv, bias):
            let o = shape(of: node.output)
            let macs = Double(o.count) * Double(conv.inChannels / conv.groups * conv.kernel.h * conv.kernel.w)
            cost.forward = WorkCost(flops: 2 * macs + (bias ? y : 0), bytes: (x + y + params) * f)
            cost.backward = WorkCost(flops: 2 * macs * (needsInputGradient ? 2 : 1) + (bias ? y : 0),
                                     bytes: (y + x + params + trainable + dx) * f)
        case .linear:
            let macs = Double(shape(of: node.output).count) * Double(shape(of: node.inputs[0]).sampleCount)
            cost.forward = WorkCost(flops: 2 * macs + y, bytes: (x + y + params) * f)
            cost.backward = WorkCost(flops: 2 * macs * (needsInputGradient ? 2 : 1) + y, bytes: (y + x + params + trainable + dx) * f)
        case .batchNorm(let relu, _, _), .groupNorm(_, let relu, _):
            // Statistics (2 per element), normalise and scale (3), ReLU (1).
            cost.forward = WorkCost(flops: (5 + (relu ? 1 : 0)) * x, bytes: (x + y + params) * f)
            // Two reductions over x and dy, then dx; the output is read too when ReLU is fused.
            cost.backward = WorkCost(flops: (8 + (relu ? 1 : 0)) * x, bytes: (x + y * (relu ? 2 : 1) + dx + params + trainable) * f)
        case .relu, .dropout, .stochasticDepth:
            cost.forward = WorkCost(flops: x, bytes: (x + y) * f)
            cost.backward = WorkCost(flops: x, bytes: (2 * y + dx) * f)
        case let .add(relu):
            cost.forward = WorkCost(flops: y * (relu ? 2 : 1), bytes: (inputsCount + y) * f)
            cost.backward = WorkCost(flops: relu ? y : 0, bytes: (y * (relu ? 2 : 1) + inputsCount) * f)
        case let .maxPool(pool), let .avgPool(pool):
            let window = Double(pool.kernel.h * pool.kernel.w)
            cost.forward = WorkCost(flops: y * window, bytes: (x + y) * f)
            cost.backward = WorkCost(flops: y * window, bytes: (2 * y + dx) * f)
        case .globalAvgPool:
            cost.forward = WorkCost(flops: x, bytes: (x + y) * f)
            cost.backward = WorkCost(flops: x, bytes: (y + dx) * f)
        case .concat:
            // A copy when the memory plan cannot place the inputs inside the output.
            cost.forward = WorkCost(flops: 0, bytes: (inputsCount + y) * f)
            cost.backward = WorkCost(flops: 0, bytes: 2 * y * f)
        case .sigmoid, .prelu:
            cost.forward = WorkCost(flops: 4 * x, bytes: (x + y + params) * f)
            cost.backward = WorkCost(flops: 3 * x, bytes: (2 * y + dx + params + trainable) * f)
        case .scalarAffine:
            cost.forward = WorkCost(flops: 2 * x, bytes: (x + y) * f)
            cost.backward = WorkCost(flops: 3 * x, bytes: (2 * y + dx) * f)
        case .channelScale:
            cost.forward = WorkCost(flops: y, bytes: (inputsCount + y) * f)
            cost.backward = WorkCost(flops: 2 * y, bytes: (2 * y + inputsCount + dx) * f)
        case let .selectiveSum(m):
            // Softmax weights (about 4 operations per logit) and M multiply-adds per output.
            cost.forward = WorkCost(flops: 2 * Double(m) * y, bytes: (inputsCount + y) * f)
            cost.backward = WorkCost(flops: 4 * Double(m) * y, bytes: (y + 2 * inputsCount) * f)
        case .padShortcut:
            cost.forward = WorkCost(flops: 0, bytes: (x + y) * f)
            cost.backward = WorkCost(flops: 0, bytes: (y + dx) * f)
        case .softmaxCrossEntropy, .distillation:
            // Max, exp, sum, log and the label term per logit.
            cost.forward = WorkCost(flops: 5 * x, bytes: x * f)
            cost.backward = WorkCost(flops: 3 * x, bytes: 2 * x * f)
        }
        return cost
    }

    /// The whole graph's cost per step, summed over nodes.
    public func cost(training: Bool) -> WorkCost {
        nodes.indices.reduce(WorkCost()) { $0 + cost(of: $1).total(training: training) }
    }
}
