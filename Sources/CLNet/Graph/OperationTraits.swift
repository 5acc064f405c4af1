// Everything the graph machinery needs to know about an operation, in one place: what its
// backward pass reads, the device memory it needs of its own, whether it may run in place or in a
// convolution's epilogue, what it costs, and what the tables call it. Every switch here is
// exhaustive, with no `default:`, so a new `Operation` case fails to compile until each fact is
// stated. The operation's kernels are dispatched by `Executor` (Executor+Dispatch.swift) and its
// CPU reference by `ReferenceExecutor`; those two switches are exhaustive too.

/// Device memory that one node needs beside the activation arena (see `Operation.memory`).
public struct NodeMemory: Sendable, Equatable {
    /// Floats of a workspace the node keeps from its forward pass to its backward pass (norm
    /// statistics, stochastic depth's scales, the loss's partial sums).
    public var workspace = 0
    /// 32-bit indices the node keeps (max pooling's argmax).
    public var indices = 0
    /// Floats of the loss's result (mean loss and correct count).
    public var result = 0
    /// Floats of the scratch space that every convolution on a queue shares (im2col columns):
    /// the executor allocates the largest once per queue.
    public var scratch = 0

    /// Bytes of the node's own buffers (the shared scratch aside).
    public var ownBytes: Int { 4 * (workspace + indices + result) }
}

/// The yes-or-no facts of an operation that the memory plan and the task schedule act on.
public struct OperationFlags: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// A loss: the backward pass starts at its output, labels are given at run time, and the
    /// executor reads its result back.
    public static let isLoss = OperationFlags(rawValue: 1 << 0)
    /// The output may be written over an input that dies at the node: the kernels allow `y` to
    /// be `x`, and the backward pass reads neither the input nor more than the output.
    public static let mayRunInPlace = OperationFlags(rawValue: 1 << 1)
    /// A convolution's bias pass can do the node's work when it follows the convolution
    /// directly (`ConvEpilogue`: a ReLU, or a residual addition with its ReLU).
    public static let fusesIntoConvolution = OperationFlags(rawValue: 1 << 2)
    /// The training forward pass writes the node's parameters (batch norm's running
    /// statistics), which orders it against every other reader of them.
    public static let writesParametersInTraining = OperationFlags(rawValue: 1 << 3)
    /// The backward pass computes the parameter gradients apart from the input gradient, so the
    /// weight gradient can run off the critical path.
    public static let splitsParameterGradient = OperationFlags(rawValue: 1 << 4)
    /// The kernels read the node's first parameter (its weight) in the activations' storage, as
    /// the convolution engine and GEMM read their operands: a mixed-precision executor keeps a
    /// 16-bit copy of it, which the optimizer's update refreshes.
    public static let readsStoredWeight = OperationFlags(rawValue: 1 << 5)
}

extension Operation {
    /// The short name the per-layer tables show (`clnet-bench model`, which adds a convolution's
    /// algorithms from `Executor.convChoices`).
    public var displayName: String {
        switch self {
        case .conv: "conv"
        case .deformConv: "deformable conv"
        case let .dendritic(op, _): op.isPointwise ? "dendritic linear" : "dendritic conv"
        case .dcls: "dcls conv"
        case let .batchNorm(relu, _, _): relu ? "batch norm + relu" : "batch norm"
        case let .groupNorm(_, relu, _): relu ? "group norm + relu" : "group norm"
        case .relu: "relu"
        case let .add(relu): relu ? "add + relu" : "add"
        case .maxPool: "max pool"
        case .avgPool: "avg pool"
        case .globalAvgPool: "global avg pool"
        case .concat: "concat"
        case .channelSlice: "channel slice"
        case .linear: "linear"
        case .dropout: "dropout"
        case .stochasticDepth: "stochastic depth"
        case .padShortcut: "pad shortcut"
        case .softmaxCrossEntropy: "softmax cross-entropy"
        case .distillation: "distillation loss"
        case .sigmoid: "sigmoid"
        case .prelu: "prelu"
        case .channelScale: "channel scale"
        case .selectiveSum: "selective sum"
        case .scalarAffine: "scalar affine"
        case .spikingNeuron: "spiking neuron"
        case .timeRepeat: "repeat over time"
        case .timeMean: "mean over time"
        case let .sewConnect(c): "sew \(c.rawValue)"
        case let .upsample(op): "upsample (\(op.mode.rawValue))"
        case .multiply: "multiply"
        case .pixelCrossEntropy: "per-pixel cross-entropy"
        case .meanSquaredError: "mean squared error"
        }
    }

    /// The yes-or-no facts of the operation (see `OperationFlags`), one line per operation.
    public var flags: OperationFlags {
        switch self {
        case .conv, .linear: [.splitsParameterGradient, .readsStoredWeight]
        // Dendritic and DCLS layers build the engine's weight from their float parameters.
        case .dendritic, .dcls: [.splitsParameterGradient]
        case .batchNorm: [.writesParametersInTraining]
        case .relu, .add: [.mayRunInPlace, .fusesIntoConvolution]
        case .softmaxCrossEntropy, .distillation, .pixelCrossEntropy, .meanSquaredError: [.isLoss]
        // A deformable convolution's weight gradient is not split off: it needs the gathered
        // columns, which the input's and the offsets' gradient then overwrites in the same
        // workspace; apart, it would need a second workspace or a second gather.
        case .deformConv: [.readsStoredWeight]
        case .groupNorm, .maxPool, .avgPool, .globalAvgPool, .concat, .channelSlice, .dropout, .stochasticDepth, .padShortcut,
             .sigmoid, .prelu, .channelScale, .selectiveSum, .scalarAffine, .spikingNeuron, .timeRepeat, .timeMean,
             .sewConnect, .upsample, .multiply: []
        }
    }

    /// A loss: the backward pass starts at its output, labels are given at run time, and the
    /// executor reads its result back.
    public var isLoss: Bool { flags.contains(.isLoss) }

    /// Whether the operation ends in a ReLU that its backward masks by (a norm's fused ReLU
    /// aside, which its backward recomputes from its input).
    public var hasReLU: Bool {
        switch self {
        case .relu: true
        case let .add(relu): relu
        case .conv, .deformConv, .dendritic, .dcls, .batchNorm, .groupNorm, .maxPool, .avgPool, .globalAvgPool, .concat,
             .channelSlice, .linear, .dropout, .stochasticDepth, .padShortcut, .sigmoid, .prelu, .channelScale, .selectiveSum,
             .scalarAffine, .softmaxCrossEntropy, .distillation, .spikingNeuron, .timeRepeat, .timeMean, .sewConnect,
             .upsample, .multiply, .pixelCrossEntropy, .meanSquaredError:
            false
        }
    }

    /// The forward tensors the backward pass reads, of a node with these inputs and output (its
    /// parameters aside). The memory plan keeps exactly these alive until that backward step, so
    /// this must agree with what `Executor.backward` and `ReferenceExecutor.backward` read.
    public func savedForBackward(inputs: [Value], output: Value) -> [Value] {
        switch self {
        // A spiking neuron's backward pass runs the steps again from its input.
        case .conv, .dendritic, .dcls, .batchNorm, .groupNorm, .linear, .softmaxCrossEntropy, .prelu, .spikingNeuron,
             .pixelCrossEntropy: [inputs[0]]
        case let .sewConnect(c): c == .add ? [] : inputs
        case .timeRepeat, .timeMean: []
        case .distillation, .channelScale, .selectiveSum, .deformConv, .multiply, .meanSquaredError: inputs
        case let .scalarAffine(scale, _): scale ? [inputs[0]] : []
        case .relu, .sigmoid: [output]
        case let .add(relu): relu ? [output] : []
        case .maxPool, .avgPool, .globalAvgPool, .concat, .channelSlice, .dropout, .padShortcut, .stochasticDepth, .upsample: []
        }
    }

    /// The device memory a node of this operation needs beside the activation arena, for input
    /// `x` and output `y`. The executor allocates, checks and reports exactly this.
    public func memory(input x: Shape, output y: Shape, training: Bool) throws(CLNetError) -> NodeMemory {
        var m = NodeMemory()
        switch self {
        case let .conv(conv, _):
            m.scratch = try conv.workspaceCount(x)
        case let .deformConv(op, _):
            m.scratch = try op.workspaceCount(x)
        case let .dendritic(op, _):
            m.scratch = try op.workspaceCount(x)
        case let .dcls(op, _):
            m.scratch = try op.workspaceCount(x)
        case .batchNorm:
            // Inference normalises with the running statistics and keeps nothing.
            if training { m.workspace = BatchNorm.workspaceCount(x.rank == 2 ? [x.n, x.c, 1, 1] : x) }
        case let .groupNorm(groups, _, _):
            m.workspace = GroupNorm.workspaceCount(x, groups: groups)
        case .stochasticDepth:
            if training { m.workspace = x.n * x.c }
        case .scalarAffine:
            if training { m.workspace = 2 * ScalarAffine.partialGroups }
        case .maxPool:
            m.indices = y.count
        case .softmaxCrossEntropy, .distillation:
            m.workspace = SoftmaxCrossEntropy.workspaceCount(batch: x.n)
            m.result = 2
        case .pixelCrossEntropy:
            m.workspace = PixelCrossEntropy.workspaceCount(x)
            m.result = 2
        case .meanSquaredError:
            m.workspace = MeanSquaredError.partialGroups
            m.result = 2
        case .relu, .add, .avgPool, .globalAvgPool, .concat, .channelSlice, .linear, .dropout, .padShortcut, .sigmoid, .prelu,
             .channelScale, .selectiveSum, .spikingNeuron, .timeRepeat, .timeMean, .sewConnect, .upsample, .multiply:
            break
        }
        return m
    }

    /// Multiply-adds of one forward pass for input `x` and output `y`: what a model's "GFLOPs"
    /// counts (convolutions and fully connected layers; everything else is zero).
    public func multiplyAdds(input x: Shape, output y: Shape) -> Double {
        switch self {
        case let .conv(conv, _): Double(y.count) * Double(conv.inChannels / conv.groups * conv.kernel.h * conv.kernel.w)
        case let .deformConv(op, _): Operation.conv(op.conv, bias: false).multiplyAdds(input: x, output: y)
        case let .dendritic(op, _): Double(y.count) * Double(op.conv.inChannels / op.conv.groups * op.conv.kernel.h * op.conv.kernel.w)
        // The convolution runs on the whole footprint, whichever taps the elements fill.
        case let .dcls(op, _): Operation.conv(op.conv, bias: false).multiplyAdds(input: x, output: y)
        case .linear: Double(y.count) * Double(x.sampleCount)
        case .batchNorm, .groupNorm, .relu, .add, .maxPool, .avgPool, .globalAvgPool, .concat, .channelSlice, .dropout,
             .stochasticDepth, .padShortcut, .sigmoid, .prelu, .channelScale, .selectiveSum, .scalarAffine, .softmaxCrossEntropy,
             .distillation, .spikingNeuron, .timeRepeat, .timeMean, .sewConnect, .upsample, .multiply, .pixelCrossEntropy,
             .meanSquaredError:
            0
        }
    }

    /// The arithmetic and least memory traffic of a node's forward and backward passes (see
    /// `WorkCost`). `x` and `y` are the first input's and the output's element counts, `inputs`
    /// every input's, `params` and `trainable` the parameters' (all and trainable), `dx` the
    /// input gradient's (0 when none is needed) and `macs` the multiply-adds.
    func passCosts(x: Double, y: Double, inputs: Double, params: Double, trainable: Double, dx: Double,
                   macs: Double) -> (forward: WorkCost, backward: WorkCost) {
        let f = 4.0
        let needsInputGradient = dx > 0
        switch self {
        case let .conv(_, bias):
            return (WorkCost(flops: 2 * macs + (bias ? y : 0), bytes: (x + y + params) * f),
                    WorkCost(flops: 2 * macs * (needsInputGradient ? 2 : 1) + (bias ? y : 0),
                             bytes: (y + x + params + trainable + dx) * f))
        case let .deformConv(op, bias):
            // Besides the products: a bilinear sample (about 10 operations) per column entry, and
            // the columns written and read once each way; backward samples again for the weight
            // gradient, and scatters to the input and the offsets.
            let columns = macs / Double(op.conv.outChannels / op.conv.groups)
            return (WorkCost(flops: 2 * macs + 10 * columns + (bias ? y : 0), bytes: (inputs + y + params + 2 * columns) * f),
                    WorkCost(flops: 4 * macs + 40 * columns + (bias ? y : 0),
                             bytes: (y + 2 * inputs + params + trainable + 6 * columns) * f))
        case let .dendritic(_, bias):
            // Each multiply-add also adds the dendrite's bias and takes the maximum with 0;
            // backward: the input gradient masks and multiply-adds (3 per multiply-add), the
            // parameters' add, mask and multiply-add twice (6).
            return (WorkCost(flops: 4 * macs + (bias ? y : 0), bytes: (x + y + params) * f),
                    WorkCost(flops: 6 * macs + (needsInputGradient ? 3 * macs : 0) + (bias ? y : 0),
                             bytes: (y + x + params + trainable + dx) * f))
        case let .dcls(op, bias):
            // The convolution's, plus building the kernel (about 16 operations per element) and,
            // backward, its gradient back to the elements (about 24).
            let elements = Double(op.weightShape.count)
            return (WorkCost(flops: 2 * macs + (bias ? y : 0) + 16 * elements, bytes: (x + y + params) * f),
                    WorkCost(flops: 2 * macs * (needsInputGradient ? 2 : 1) + (bias ? y : 0) + 40 * elements,
                             bytes: (y + x + params + trainable + dx) * f))
        case .linear:
            return (WorkCost(flops: 2 * macs + y, bytes: (x + y + params) * f),
                    WorkCost(flops: 2 * macs * (needsInputGradient ? 2 : 1) + y, bytes: (y + x + params + trainable + dx) * f))
        case .batchNorm(let relu, _, _), .groupNorm(_, let relu, _):
            // Statistics (2 per element), normalise and scale (3), ReLU (1); backward: two
            // reductions over x and dy, then dx, reading the output too when ReLU is fused.
            return (WorkCost(flops: (5 + (relu ? 1 : 0)) * x, bytes: (x + y + params) * f),
                    WorkCost(flops: (8 + (relu ? 1 : 0)) * x, bytes: (x + y * (relu ? 2 : 1) + dx + params + trainable) * f))
        case .relu, .dropout, .stochasticDepth:
            return (WorkCost(flops: x, bytes: (x + y) * f), WorkCost(flops: x, bytes: (2 * y + dx) * f))
        case let .add(relu):
            return (WorkCost(flops: y * (relu ? 2 : 1), bytes: (inputs + y) * f),
                    WorkCost(flops: relu ? y : 0, bytes: (y * (relu ? 2 : 1) + inputs) * f))
        case let .maxPool(pool), let .avgPool(pool):
            let window = Double(pool.kernel.h * pool.kernel.w)
            return (WorkCost(flops: y * window, bytes: (x + y) * f), WorkCost(flops: y * window, bytes: (2 * y + dx) * f))
        case .globalAvgPool:
            return (WorkCost(flops: x, bytes: (x + y) * f), WorkCost(flops: x, bytes: (y + dx) * f))
        case .concat:
            // A copy when the memory plan cannot place the inputs inside the output.
            return (WorkCost(flops: 0, bytes: (inputs + y) * f), WorkCost(flops: 0, bytes: 2 * y * f))
        case .channelSlice:
            // A copy; backward writes the whole input gradient (zeros outside the slice).
            return (WorkCost(flops: 0, bytes: 2 * y * f), WorkCost(flops: 0, bytes: (y + dx) * f))
        case .sigmoid, .prelu:
            return (WorkCost(flops: 4 * x, bytes: (x + y + params) * f),
                    WorkCost(flops: 3 * x, bytes: (2 * y + dx + params + trainable) * f))
        case .scalarAffine:
            return (WorkCost(flops: 2 * x, bytes: (x + y) * f), WorkCost(flops: 3 * x, bytes: (2 * y + dx) * f))
        case .channelScale:
            return (WorkCost(flops: y, bytes: (inputs + y) * f), WorkCost(flops: 2 * y, bytes: (2 * y + inputs + dx) * f))
        case let .selectiveSum(m):
            // Softmax weights (about 4 operations per logit) and M multiply-adds per output.
            return (WorkCost(flops: 2 * Double(m) * y, bytes: (inputs + y) * f),
                    WorkCost(flops: 4 * Double(m) * y, bytes: (y + 2 * inputs) * f))
        case .padShortcut, .timeRepeat, .timeMean:
            return (WorkCost(flops: 0, bytes: (x + y) * f), WorkCost(flops: 0, bytes: (y + dx) * f))
        case .spikingNeuron:
            // Charge, fire and reset per step; backward runs the steps again, then the surrogate.
            return (WorkCost(flops: 4 * x, bytes: (x + y) * f), WorkCost(flops: 16 * x, bytes: (x + y + dx) * f))
        case .sewConnect:
            return (WorkCost(flops: 2 * y, bytes: (inputs + y) * f), WorkCost(flops: 3 * y, bytes: (y + 2 * inputs) * f))
        case .softmaxCrossEntropy, .distillation, .pixelCrossEntropy:
            // Max, exp, sum, log and the label term per logit.
            return (WorkCost(flops: 5 * x, bytes: x * f), WorkCost(flops: 3 * x, bytes: 2 * x * f))
        case .meanSquaredError:
            return (WorkCost(flops: 3 * x, bytes: 2 * x * f), WorkCost(flops: 2 * x, bytes: 3 * x * f))
        case let .upsample(op):
            // Four taps of two multiply-adds (bilinear) or one copy per output; backward gathers
            // the same taps per input.
            let taps = op.mode == .bilinear ? 8.0 : 0
            return (WorkCost(flops: taps * y, bytes: (x + y) * f), WorkCost(flops: taps * y, bytes: (y + dx) * f))
        case .multiply:
            return (WorkCost(flops: y, bytes: (inputs + y) * f), WorkCost(flops: 2 * y, bytes: (2 * y + inputs) * f))
        }
    }
}

extension Operation {
    /// How many labels a loss of this operation takes for input `x`: one per sample, one per
    /// pixel, or none (the mean squared error's target is a graph input).
    public func labelCount(input x: Shape) -> Int {
        switch self {
        case .softmaxCrossEntropy, .distillation: x.n
        case .pixelCrossEntropy: x.n * x.h * x.w
        case .meanSquaredError, .conv, .deformConv, .dendritic, .dcls, .batchNorm, .groupNorm, .relu, .add, .maxPool, .avgPool,
             .globalAvgPool, .concat, .channelSlice, .linear, .dropout, .stochasticDepth, .padShortcut, .sigmoid, .prelu,
             .channelScale, .selectiveSum, .scalarAffine, .spikingNeuron, .timeRepeat, .timeMean, .sewConnect, .upsample,
             .multiply:
            0
        }
    }

    /// Refuses labels that do not fit a loss of this operation on input `x` (see `labelCount`);
    /// the executors check with this before a step. Labels given to a loss that takes none are
    /// ignored.
    public func checkLabels(_ labels: [Int], input x: Shape) throws(CLNetError) {
        if case let .pixelCrossEntropy(ignore) = self {
            try PixelCrossEntropy.checkLabels(labels, logits: x, ignoreIndex: ignore)
        } else if labelCount(input: x) > 0 {
            try SoftmaxCrossEntropy.checkLabels(labels, logits: x)
        }
    }
}

extension Node {
    /// The forward tensors this node's backward pass reads (see `Operation.savedForBackward`).
    public var savedForBackward: [Value] { operation.savedForBackward(inputs: inputs, output: output) }
}
