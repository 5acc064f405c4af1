/// Runs a graph's forward pass with the CPU reference operators, in Double: the oracle that the
/// device executor is tested against, and the CPU fallback.
public struct ReferenceExecutor: Sendable {
    public let graph: Graph
    /// Every parameter and buffer by name; training-mode batch norm updates the running statistics here.
    public private(set) var parameters: [String: [Double]]
    /// Rounds what the device keeps in float32 to float32: the inputs and parameters as they are
    /// read, every value and gradient as it is stored, and the parameter gradients and running
    /// statistics it writes; each operator is still computed in Double. How far that moves a
    /// result from an exact run measures how well float32 storage can determine it at all: a
    /// gradient that cancels (a sum of terms much larger than itself) moves far, and no float32
    /// executor can match it closely.
    public var roundsToFloat32 = false

    /// Mixed precision: the format an executor of that precision stores activations, their
    /// gradients and the weights its kernels read in; the reference rounds them to it as they
    /// are stored, and computes each operator in Double still. The loss stays unrounded, as the
    /// executor keeps it in float32.
    public var activationStorage: Precision = .fp32

    /// `v` as a float32 buffer would hold it, with `roundsToFloat32`.
    private func stored(_ v: [Double]) -> [Double] {
        roundsToFloat32 ? v.map { Double(Float($0)) } : v
    }

    /// `v` as the activation arena holds it.
    private func storedValue(_ v: [Double]) -> [Double] {
        activationStorage == .fp32 ? stored(v) : v.map { Double(activationStorage.rounded(Float($0))) }
    }

    /// Node parameters as its kernels read them (a weight read in the activations' storage rounded to it).
    private func nodeParameters(_ node: Node) -> [[Double]] {
        node.parameters.enumerated().map { i, p in
            let v = parameters[graph.parameters[p].name]!
            return i == 0 && node.operation.flags.contains(.readsStoredWeight) ? storedValue(v) : stored(v)
        }
    }

    /// Checks that `parameters` holds every parameter of `graph` with the right number of values.
    public init(graph: Graph, parameters: [String: [Double]]) throws(CLNetError) {
        for i in graph.parameters.indices { _ = try graph.checkedParameter(i, in: parameters, for: "reference executor") }
        self.graph = graph
        self.parameters = parameters
    }

    /// Every value of the graph, by index, after one forward pass. In training mode batch norm
    /// normalises with batch statistics (and updates its running statistics) and dropout drops
    /// with a generator seeded by `seed` and the node's position.
    public mutating func forward(_ inputs: [String: [Double]], labels: [Int] = [], training: Bool,
                                 seed: UInt32 = 0) throws(CLNetError) -> [[Double]] {
        var values = [[Double]](repeating: [], count: graph.shapes.count)
        for (name, v) in graph.inputs {
            guard let x = inputs[name], x.count == graph.shape(of: v).count else {
                throw .invalidShape(operation: "input \(name)", message: "needs \(graph.shape(of: v).count) values of shape \(graph.shape(of: v)), got \(inputs[name]?.count ?? 0)")
            }
            values[v.index] = storedValue(x)
        }
        for (k, node) in graph.nodes.enumerated() {
            let xs = node.inputs.map { values[$0.index] }
            let shape = graph.shape(of: node.inputs[0])
            let p = nodeParameters(node)
            let y: [Double]
            switch node.operation {
            case let .conv(conv, bias):
                y = Reference.conv2d(xs[0], shape: shape, weight: p[0], bias: bias ? p[1] : nil, conv: conv)
            case let .deformConv(op, bias):
                y = Reference.deformConv2d(xs[0], shape: shape, offset: xs[1], mask: op.modulated ? xs[2] : nil, weight: p[0],
                                           bias: bias ? p[1] : nil, op: op)
            case let .dcls(op, bias):
                y = Reference.dclsConv2d(xs[0], shape: shape, weight: p[0], positions: p[1], bias: bias ? p[2] : nil, op: op)
            case let .dendritic(op, bias):
                y = Reference.dendriticConv2d(xs[0], shape: shape, weight: p[0], dendrites: p[1], bias: bias ? p[2] : nil,
                                              conv: op.conv)
            case let .batchNorm(relu, eps, momentum):
                if training {
                    let r = Reference.batchNormTraining(xs[0], shape: shape, gamma: p[0], beta: p[1], runningMean: p[2],
                                                        runningVar: p[3], eps: Double(eps), momentum: Double(momentum),
                                                        relu: relu)
                    parameters[graph.parameters[node.parameters[2]].name] = stored(r.runningMean)
                    parameters[graph.parameters[node.parameters[3]].name] = stored(r.runningVar)
                    y = r.y
                } else {
                    y = Reference.batchNormInference(xs[0], shape: shape, gamma: p[0], beta: p[1], runningMean: p[2],
                                                     runningVar: p[3], eps: Double(eps), relu: relu)
                }
            case let .groupNorm(groups, relu, eps):
                y = Reference.groupNorm(xs[0], shape: shape, gamma: p[0], beta: p[1], groups: groups, eps: Double(eps), relu: relu)
            case .relu:
                y = Reference.relu(xs[0])
            case let .add(relu):
                y = Reference.add(xs[0], xs[1], relu: relu)
            case let .maxPool(window):
                y = Reference.maxPool(xs[0], shape: shape, window: window).y
            case let .avgPool(window):
                y = Reference.avgPool(xs[0], shape: shape, window: window)
            case .globalAvgPool:
                y = Reference.globalAvgPool(xs[0], shape: shape)
            case .concat:
                y = Reference.concat(xs, shapes: node.inputs.map { graph.shape(of: $0) })
            case let .channelSlice(op):
                y = Reference.channelSlice(xs[0], shape: shape, start: op.start, count: op.count)
            case let .linear(outFeatures, bias):
                y = Reference.linear(xs[0], batch: shape.n, weight: p[0], outFeatures: outFeatures, bias: bias ? p[1] : nil)
            case let .stochasticDepth(rate):
                y = training ? Reference.channelScale(xs[0], shape: shape,
                                                      scale: StepRandomness.stochasticDepthScales(shape, p: rate, seed: StepRandomness.nodeSeed(seed, node: k)).map(Double.init))
                    : xs[0]
            case let .dropout(rate):
                y = training ? Reference.dropout(xs[0], p: rate, seed: StepRandomness.nodeSeed(seed, node: k)) : xs[0]
            case let .padShortcut(op):
                y = Reference.padShortcut(xs[0], shape: shape, outChannels: op.outChannels, stride: op.stride)
            case .sigmoid:
                y = Reference.sigmoid(xs[0])
            case .prelu:
                y = Reference.prelu(xs[0], shape: shape, slope: p[0])
            case .channelScale:
                y = Reference.channelScale(xs[0], shape: shape, scale: xs[1])
            case let .spikingNeuron(neuron):
                y = Reference.spikingNeuron(xs[0], shape: shape, neuron: neuron)
            case let .timeRepeat(steps):
                y = Reference.timeRepeat(xs[0], steps: steps)
            case let .timeMean(steps):
                y = Reference.timeMean(xs[0], steps: steps)
            case let .sewConnect(connect):
                y = Reference.sewConnect(xs[0], xs[1], connect)
            case let .selectiveSum(m):
                y = Reference.selectiveSum(Array(xs.prefix(m)), shape: shape, logits: xs[m])
            case let .scalarAffine(hasScale, hasBias):
                y = Reference.scalarAffine(xs[0], scale: hasScale ? p[0][0] : nil, bias: hasBias ? p[hasScale ? 1 : 0][0] : nil)
            case let .softmaxCrossEntropy(smoothing):
                try SoftmaxCrossEntropy.checkLabels(labels, logits: shape)
                y = [Reference.softmaxCrossEntropy(xs[0], batch: shape.n, labels: labels, smoothing: Double(smoothing)).loss]
            case let .distillation(d):
                try SoftmaxCrossEntropy.checkLabels(labels, logits: shape)
                y = [Reference.distillation(xs[0], teacher: xs[1], batch: shape.n, labels: labels, temperature: Double(d.temperature),
                                            weight: Double(d.weight), smoothing: Double(d.labelSmoothing)).loss]
            case let .pixelCrossEntropy(ignore):
                try PixelCrossEntropy.checkLabels(labels, logits: shape, ignoreIndex: ignore)
                y = [Reference.pixelCrossEntropy(xs[0], shape: shape, labels: labels, ignoreIndex: ignore).loss]
            case .meanSquaredError:
                y = [Reference.meanSquaredError(xs[0], target: xs[1])]
            case let .upsample(op):
                y = Reference.upsample(xs[0], shape: shape, op: op)
            case .multiply:
                y = Reference.multiply(xs[0], xs[1])
            }
            values[node.output.index] = node.operation.isLoss ? stored(y) : storedValue(y)
        }
        return values
    }

    /// Gradients of the loss (scaled by 1) after `forward` in training mode on the same inputs:
    /// each trainable parameter's by name, and each value's that needs one (by index, empty
    /// where none is computed).
    public func backward(values: [[Double]], labels: [Int], seed: UInt32 = 0) throws(CLNetError)
        -> (parameters: [String: [Double]], values: [[Double]]) {
        guard let loss = graph.lossNode else {
            throw .invalidGraph("backward: the graph has no loss node")
        }
        return try backward(values: values, from: graph.nodes[loss].output, gradient: [1], inputGradients: false,
                            training: true, labels: labels, seed: seed)
    }

    /// The backward pass from any value `root`, seeded with `gradient` (its shape), after
    /// `forward` with the same `training`: the gradients of `root` times `gradient` with respect
    /// to each trainable parameter and each value on the way, and, with `inputGradients`, the
    /// graph inputs (what effective receptive fields need). In inference mode batch norm's
    /// statistics are constants and dropout is the identity, as in the forward pass.
    public func backward(values: [[Double]], from root: Value, gradient: [Double], inputGradients: Bool, training: Bool,
                         labels: [Int] = [], seed: UInt32 = 0) throws(CLNetError)
        -> (parameters: [String: [Double]], values: [[Double]]) {
        guard root.index >= 0, root.index < graph.shapes.count, gradient.count == graph.shape(of: root).count else {
            throw .invalidShape(operation: "backward", message: "the seed gradient has \(gradient.count) values; value \(root) needs \(root.index >= 0 && root.index < graph.shapes.count ? graph.shape(of: root).count : 0)")
        }
        guard values.count == graph.shapes.count, !values[root.index].isEmpty else {
            throw .invalidState("backward: needs the values of a forward pass over this graph")
        }
        var grads = [[Double]](repeating: [], count: graph.shapes.count)
        grads[root.index] = gradient
        var allParamGrads: [String: [Double]] = [:]
        func add(_ v: Value, _ g: [Double], _ accumulate: Bool) {
            grads[v.index] = storedValue(accumulate ? zip(grads[v.index], g).map(+) : g)
        }
        for step in graph.backwardSteps(from: root, inputGradients: inputGradients) {
            let node = graph.nodes[step.node]
            let dy = grads[node.output.index]
            let xs = node.inputs.map { values[$0.index] }
            let shape = graph.shape(of: node.inputs[0])
            let p = nodeParameters(node)
            let names = node.parameters.map { graph.parameters[$0].name }
            var inputGrads: [[Double]] = [], paramGrads: [String: [Double]] = [:]
            switch node.operation {
            case let .conv(conv, bias):
                let g = Reference.conv2dBackward(xs[0], shape: shape, weight: p[0], conv: conv, dy: dy)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dweight
                if bias { paramGrads[names[1]] = g.dbias }
            case let .deformConv(op, bias):
                let g = Reference.deformConv2dBackward(xs[0], shape: shape, offset: xs[1], mask: op.modulated ? xs[2] : nil,
                                                       weight: p[0], op: op, dy: dy)
                inputGrads = [g.dx, g.doffset] + (g.dmask.map { [$0] } ?? [])
                paramGrads[names[0]] = g.dweight
                if bias { paramGrads[names[1]] = g.dbias }
            case let .dcls(op, bias):
                let g = Reference.dclsConv2dBackward(xs[0], shape: shape, weight: p[0], positions: p[1], op: op, dy: dy)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dweight
                paramGrads[names[1]] = g.dpositions
                if bias { paramGrads[names[2]] = g.dbias }
            case let .dendritic(op, bias):
                let g = Reference.dendriticConv2dBackward(xs[0], shape: shape, weight: p[0], dendrites: p[1], conv: op.conv, dy: dy)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dweight
                paramGrads[names[1]] = g.ddendrites
                if bias { paramGrads[names[2]] = g.dbias }
            case let .batchNorm(relu, eps, _) where !training:
                inputGrads = [Reference.batchNormInferenceBackward(shape: shape, gamma: p[0], runningVar: p[3], eps: Double(eps),
                                                                   relu: relu, y: values[node.output.index], dy: dy)]
            case let .batchNorm(relu, eps, _):
                let g = Reference.normBackward(xs[0], shape: shape, gamma: p[0], beta: p[1], groups: 0, dy: dy,
                                               eps: Double(eps), relu: relu)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dgamma
                paramGrads[names[1]] = g.dbeta
            case let .groupNorm(groups, relu, eps):
                let g = Reference.normBackward(xs[0], shape: shape, gamma: p[0], beta: p[1], groups: groups, dy: dy,
                                               eps: Double(eps), relu: relu)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dgamma
                paramGrads[names[1]] = g.dbeta
            case .relu:
                inputGrads = [Reference.reluBackward(y: values[node.output.index], dy: dy)]
            case let .add(relu):
                let g = Reference.addBackward(y: values[node.output.index], dy: dy, relu: relu)
                inputGrads = [g, g]
            case let .maxPool(window):
                let indices = Reference.maxPool(xs[0], shape: shape, window: window).indices
                inputGrads = [Reference.maxPoolBackward(dy: dy, indices: indices, shape: shape, window: window)]
            case let .avgPool(window):
                inputGrads = [Reference.avgPoolBackward(dy: dy, shape: shape, window: window)]
            case .globalAvgPool:
                inputGrads = [Reference.globalAvgPoolBackward(dy: dy, shape: shape)]
            case .concat:
                inputGrads = Reference.concatBackward(dy: dy, shapes: node.inputs.map { graph.shape(of: $0) })
            case let .channelSlice(op):
                inputGrads = [Reference.channelSliceBackward(dy: dy, shape: shape, start: op.start, count: op.count)]
            case let .linear(outFeatures, bias):
                let g = Reference.linearBackward(xs[0], batch: shape.n, weight: p[0], outFeatures: outFeatures, dy: dy)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dweight
                if bias { paramGrads[names[1]] = g.dbias }
            case .stochasticDepth where !training, .dropout where !training:
                inputGrads = [dy]
            case let .stochasticDepth(rate):
                let scales = StepRandomness.stochasticDepthScales(shape, p: rate, seed: StepRandomness.nodeSeed(seed, node: step.node))
                inputGrads = [Reference.channelScaleBackward(xs[0], shape: shape, scale: scales.map(Double.init), dy: dy).dx]
            case let .dropout(rate):
                inputGrads = [Reference.dropoutBackward(dy: dy, p: rate, seed: StepRandomness.nodeSeed(seed, node: step.node))]
            case let .padShortcut(op):
                inputGrads = [Reference.padShortcutBackward(dy: dy, shape: shape, outChannels: op.outChannels, stride: op.stride)]
            case .sigmoid:
                inputGrads = [Reference.sigmoidBackward(y: values[node.output.index], dy: dy)]
            case .prelu:
                let g = Reference.preluBackward(xs[0], shape: shape, slope: p[0], dy: dy)
                inputGrads = [g.dx]
                paramGrads[names[0]] = g.dslope
            case .channelScale:
                let g = Reference.channelScaleBackward(xs[0], shape: shape, scale: xs[1], dy: dy)
                inputGrads = [g.dx, g.dscale]
            case let .spikingNeuron(neuron):
                inputGrads = [Reference.spikingNeuronBackward(xs[0], shape: shape, neuron: neuron, dy: dy)]
            case let .timeRepeat(steps):
                inputGrads = [Reference.timeMean(dy, steps: steps, scale: 1)]
            case let .timeMean(steps):
                inputGrads = [Reference.timeRepeat(dy, steps: steps).map { $0 / Double(steps) }]
            case let .sewConnect(connect):
                let g = Reference.sewConnectBackward(xs[0], xs[1], connect, dy: dy)
                inputGrads = [g.dshortcut, g.dbranch]
            case let .selectiveSum(m):
                let g = Reference.selectiveSumBackward(Array(xs.prefix(m)), shape: shape, logits: xs[m], dy: dy)
                inputGrads = g.dbranches + [g.dlogits]
            case let .scalarAffine(hasScale, hasBias):
                let g = Reference.scalarAffineBackward(xs[0], scale: hasScale ? p[0][0] : nil, dy: dy)
                inputGrads = [g.dx]
                if hasScale { paramGrads[names[0]] = [g.dscale] }
                if hasBias { paramGrads[names[hasScale ? 1 : 0]] = [g.dbias] }
            case let .softmaxCrossEntropy(smoothing):
                inputGrads = [Reference.softmaxCrossEntropyBackward(xs[0], batch: shape.n, labels: labels,
                                                                    smoothing: Double(smoothing), scale: dy[0])]
            case let .distillation(d):
                // The teacher's logits are data: no gradient flows into them.
                inputGrads = [Reference.distillationBackward(xs[0], teacher: xs[1], batch: shape.n, labels: labels,
                                                             temperature: Double(d.temperature), weight: Double(d.weight),
                                                             smoothing: Double(d.labelSmoothing), scale: dy[0]),
                              [Double](repeating: 0, count: xs[1].count)]
            case let .pixelCrossEntropy(ignore):
                inputGrads = [Reference.pixelCrossEntropyBackward(xs[0], shape: shape, labels: labels, ignoreIndex: ignore,
                                                                  scale: dy[0])]
            case .meanSquaredError:
                // The target is data: no gradient flows into it.
                inputGrads = [Reference.meanSquaredErrorBackward(xs[0], target: xs[1], scale: dy[0]),
                              [Double](repeating: 0, count: xs[1].count)]
            case let .upsample(op):
                inputGrads = [Reference.upsampleBackward(dy: dy, shape: shape, op: op)]
            case .multiply:
                inputGrads = [Reference.multiply(dy, xs[1]), Reference.multiply(dy, xs[0])]
            }
            for g in step.inputs { add(node.inputs[g.input], inputGrads[g.input], g.accumulate) }
            // A shared parameter's gradient is the sum over its uses.
            for (name, g) in paramGrads { allParamGrads[name] = allParamGrads[name].map { zip($0, g).map(+) } ?? g }
        }
        return (allParamGrads.mapValues(stored), grads)
    }
}
