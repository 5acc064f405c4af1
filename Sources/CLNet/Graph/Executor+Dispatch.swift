/// Running one task of the schedule: each node's kernels, forward and backward, and the
/// optimizer's update. The switches over operations here are exhaustive: a new operation must
/// say how it runs.
extension Executor {
    /// Enqueues task `t` on its queue after the events it depends on, and records its own.
    /// A node the memory plan made free does nothing: a ReLU or addition fused into the
    /// convolution before it (forward) or into the norm before it (backward), and a
    /// concatenation whose inputs already sit in its output (forward and backward).
    func run(_ t: Int) throws(CLNetError) {
        let task = schedule.tasks[t]
        let q = queues[task.queue]
        try q.barrier(waitFor: task.dependencies.compactMap { events[$0] })
        q.setScope(t)
        defer { q.setScope(nil) }
        switch task.kind {
        case let .forward(k):
            if !plan.fusedNodes.contains(k) && !plan.freeConcats.contains(k) {
                try forward(k, graph.nodes[k], q, scratch[task.queue])
            }
        case let .backward(i, part):
            let step = schedule.backwardSteps[i]
            if !plan.freeConcats.contains(step.node) && !plan.absorbedBackward.contains(step.node) {
                try backward(step, graph.nodes[step.node], part, q, scratch[task.queue])
                if part != .inputs { try addSharedGradients(step.node, q) }
            }
        case let .update(k):
            try update(k, q)
        }
        if task.signals { events[t] = try q.marker() }
    }

    /// Parameter `i` of a node as its kernels read it: a weight the kernels read in the
    /// activations' storage is its 16-bit copy under mixed precision.
    private func param(_ node: Node, _ i: Int) -> Tensor { storedParameter(node.parameters[i]) }

    /// Batch norm over [N, C] (PyTorch's BatchNorm1d) runs as [N, C, 1, 1]; other tensors pass.
    private func normView(_ node: Node, _ t: Tensor) throws(CLNetError) -> Tensor {
        guard case .batchNorm = node.operation, t.shape.rank == 2 else { return t }
        return try t.reshaped([t.shape.n, t.shape.c, 1, 1])
    }

    /// A scalar-affine node's scale and bias as one tensor: the builder adds them one after the
    /// other, so they sit side by side in the parameter (and gradient) arena.
    private func scalars(_ node: Node, gradient: Bool) throws(CLNetError) -> Tensor? {
        guard let first = gradient ? gradientViews[node.parameters[0]] : parameterViews[node.parameters[0]] else { return nil }
        return try Tensor(buffer: first.buffer, shape: [node.parameters.count], offset: first.offset)
    }
    /// Where the node writes parameter `i`'s gradient: the gradient arena, or, where it adds to a
    /// shared parameter's gradient that another node's step wrote, the parameter's addend buffer.
    private func grad(_ node: Node, _ i: Int) -> Tensor? {
        let p = node.parameters[i]
        if let k = graph.producers[node.output.index], schedule.parameterGradients.accumulates(node: k, parameter: p) {
            return sharedGradientAddends[p]
        }
        return gradientViews[p]
    }

    /// Adds what node `k`'s step wrote into the addend buffers to the shared parameters' gradients.
    private func addSharedGradients(_ k: Int, _ queue: CommandQueue) throws(CLNetError) {
        for p in Set(graph.nodes[k].parameters) where schedule.parameterGradients.accumulates(node: k, parameter: p) {
            try queue.copy(from: sharedGradientAddends[p]!, to: gradientViews[p]!, accumulate: true)
        }
    }

    /// Updates node `k`'s trainable parameters from their gradients (one launch per parameter, as
    /// weight decay may differ between them); a shared parameter only at its last use's step.
    func update(_ k: Int, _ queue: CommandQueue) throws(CLNetError) {
        guard var sgd = optimizer, let momentumArena else { return }
        let decay = sgd.weightDecay, rate = sgd.learningRate, prior = (sgd.prior, sgd.priorTarget)
        for i in Set(graph.nodes[k].parameters).sorted() where schedule.parameterGradients.finishingNode[i] == k {
            let p = parameterViews[i], g = gradientViews[i]!
            let m = try Tensor(buffer: momentumArena, shape: p.shape, offset: p.offset)
            // Decay would pull DCLS's positions to the footprint's centre: they are never decayed.
            let role = graph.parameters[i].role
            sgd.weightDecay = (decayOnlyWeights && role != .weight) || role == .position ? 0 : decay
            sgd.learningRate = rate * graph.parameters[i].learningRateScale
            sgd.bounds = graph.parameters[i].bounds
            (sgd.prior, sgd.priorTarget) = graph.parameters[i].role == .slope && linearityPrior > 0 ? (linearityPrior, 1) : prior
            try sgd.step(queue, parameters: p, gradients: g, momentumBuffer: m, gradientScale: 1 / lossGradientScale,
                         overflow: overflowFlag, weightCopy: weightCopies[i])
        }
    }

    private func forward(_ k: Int, _ node: Node, _ queue: CommandQueue, _ workspace: Tensor?) throws(CLNetError) {
        let x = try normView(node, values[node.inputs[0].index]), y = try normView(node, values[node.output.index])
        switch node.operation {
        case let .conv(conv, bias):
            try conv.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y, workspace: workspace,
                             epilogue: epilogue(after: k), written: writtenStatistics[k], algorithm: convChoices[k]?.forward)
        case let .deformConv(op, bias):
            try op.forward(queue, x: x, offset: values[node.inputs[1].index], mask: op.modulated ? values[node.inputs[2].index] : nil,
                           weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y, workspace: workspace)
        case let .dcls(op, bias):
            try op.forward(queue, x: x, weight: param(node, 0), positions: param(node, 1), bias: bias ? param(node, 2) : nil, y: y,
                           workspace: workspace)
        case let .dendritic(op, bias):
            try op.forward(queue, x: x, weight: param(node, 0), dendrites: param(node, 1), bias: bias ? param(node, 2) : nil, y: y,
                           workspace: workspace)
        case let .batchNorm(relu, eps, momentum):
            if training {
                try BatchNorm.forwardTraining(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                              runningMean: param(node, 2), runningVar: param(node, 3), y: y,
                                              workspace: nodeWorkspaces[k]!, relu: relu, eps: eps, momentum: momentum,
                                              synchronizedOver: batchNormCommunicator, known: knownStatistics(for: k),
                                              written: writtenStatistics[k])
            } else {
                try BatchNorm.forwardInference(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                               runningMean: param(node, 2), runningVar: param(node, 3), y: y,
                                               relu: relu, eps: eps)
            }
        case let .groupNorm(groups, relu, eps):
            try GroupNorm.forward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), groups: groups, y: y,
                                  workspace: nodeWorkspaces[k]!, relu: relu, eps: eps)
        case .relu:
            try ReLU.forward(queue, x: x, y: y)
        case let .add(relu):
            try Add.forward(queue, a: x, b: values[node.inputs[1].index], y: y, relu: relu)
        case let .maxPool(window):
            try MaxPool.forward(queue, x: x, y: y, indices: poolIndices[k]!, window: window)
        case let .avgPool(window):
            try AvgPool.forward(queue, x: x, y: y, window: window)
        case .globalAvgPool:
            try GlobalAvgPool.forward(queue, x: x, y: y)
        case .concat:
            try Concat.forward(queue, inputs: node.inputs.map { values[$0.index] }, y: y)
        case let .channelSlice(op):
            try op.forward(queue, x: x, y: y)
        case let .linear(_, bias):
            try Linear.forward(queue, x: x, weight: param(node, 0), bias: bias ? param(node, 1) : nil, y: y)
        case let .stochasticDepth(p):
            if training {
                let scales = try storedWorkspace(k)
                let draws = StepRandomness.stochasticDepthScales(x.shape, p: p, seed: StepRandomness.nodeSeed(stepSeed, node: k))
                uploads.append(try queue.writeAsync(draws, to: scales))
                try ChannelScale.forward(queue, x: x, scale: scales, y: y)
            } else {
                try queue.copy(from: x, to: y)
            }
        case let .dropout(p):
            if training {
                try Dropout.forward(queue, x: x, y: y, p: p, seed: StepRandomness.nodeSeed(stepSeed, node: k))
            } else {
                try queue.copy(from: x, to: y)
            }
        case let .padShortcut(op):
            try op.forward(queue, x: x, y: y)
        case .sigmoid:
            try Sigmoid.forward(queue, x: x, y: y)
        case .prelu:
            try PReLU.forward(queue, x: x, slope: param(node, 0), y: y)
        case .channelScale:
            try ChannelScale.forward(queue, x: x, scale: values[node.inputs[1].index], y: y)
        case let .spikingNeuron(neuron):
            try neuron.forward(queue, x: x, y: y)
        case let .timeRepeat(steps):
            try TimeSteps.broadcast(queue, small: x, big: y, steps: steps)
        case let .timeMean(steps):
            try TimeSteps.sum(queue, big: x, small: y, steps: steps, scale: 1 / Float(steps))
        case let .sewConnect(connect):
            try connect.forward(queue, shortcut: x, branch: values[node.inputs[1].index], y: y)
        case let .selectiveSum(m):
            try SelectiveSum.forward(queue, branches: node.inputs.prefix(m).map { values[$0.index] },
                                     logits: values[node.inputs[m].index], y: y)
        case let .scalarAffine(hasScale, hasBias):
            try ScalarAffine.forward(queue, x: x, parameters: try scalars(node, gradient: false)!, hasScale: hasScale,
                                     hasBias: hasBias, y: y)
        case let .softmaxCrossEntropy(smoothing):
            try SoftmaxCrossEntropy.forward(queue, logits: x, labels: labels!, result: lossResult!,
                                            workspace: nodeWorkspaces[k]!, labelSmoothing: smoothing)
            try queue.copy(from: try lossResult!.vector(offset: 0, count: 1), to: y)
        case let .distillation(d):
            try d.forward(queue, logits: x, teacher: values[node.inputs[1].index], labels: labels!, result: lossResult!,
                          workspace: nodeWorkspaces[k]!)
            try queue.copy(from: try lossResult!.vector(offset: 0, count: 1), to: y)
        case let .pixelCrossEntropy(ignore):
            try PixelCrossEntropy.forward(queue, logits: x, labels: labels!, result: lossResult!, workspace: nodeWorkspaces[k]!,
                                          ignoreIndex: ignore)
            try queue.copy(from: try lossResult!.vector(offset: 0, count: 1), to: y)
        case .meanSquaredError:
            try MeanSquaredError.forward(queue, prediction: x, target: values[node.inputs[1].index], result: lossResult!,
                                         workspace: nodeWorkspaces[k]!)
            try queue.copy(from: try lossResult!.vector(offset: 0, count: 1), to: y)
        case let .upsample(op):
            try op.forward(queue, x: x, y: y)
        case .multiply:
            try Multiply.forward(queue, a: x, b: values[node.inputs[1].index], y: y)
        }
    }

    /// The statistics an earlier batch norm measured over node k's first channels, where the
    /// plan shares them; synchronised batch norm measures its own (the shared ones are local).
    private func knownStatistics(for k: Int) -> KnownStatistics? {
        guard batchNormCommunicator == nil, let j = plan.sharedStatistics[k] else { return nil }
        return KnownStatistics(workspace: nodeWorkspaces[j]!, channels: graph.shape(of: graph.nodes[j].inputs[0]).c)
    }

    /// The addition or ReLU the plan fused into convolution `k`'s bias pass, if any.
    private func epilogue(after k: Int) -> ConvEpilogue? {
        guard let j = plan.epilogues[k] else { return nil }
        let next = graph.nodes[j], out = values[next.output.index]
        switch next.operation {
        case .relu:
            return ConvEpilogue(relu: true, output: out)
        case let .add(relu):
            let other = next.inputs[0] == graph.nodes[k].output ? next.inputs[1] : next.inputs[0]
            return ConvEpilogue(residual: values[other.index], relu: relu, output: out)
        case .conv, .deformConv, .dendritic, .dcls, .batchNorm, .groupNorm, .maxPool, .avgPool, .globalAvgPool, .concat, .channelSlice,
             .linear, .dropout, .stochasticDepth, .padShortcut, .sigmoid, .prelu, .channelScale, .selectiveSum, .scalarAffine, .softmaxCrossEntropy, .distillation,
             .spikingNeuron, .timeRepeat, .timeMean, .sewConnect, .upsample, .multiply, .pixelCrossEntropy, .meanSquaredError:
            // Not flagged `fusesIntoConvolution`, so the plan never fuses them; an operation that
            // is flagged must say here what the convolution's bias pass does for it.
            return nil
        }
    }

    private func backward(_ step: BackwardStep, _ node: Node, _ part: TaskSchedule.Part, _ queue: CommandQueue,
                          _ workspace: Tensor?) throws(CLNetError) {
        let k = step.node
        // A norm that does its consumer's backward starts from that node's output gradient.
        let fusion = plan.normFusions[k], upstream = fusion.map { graph.nodes[$0.consumer] }
        let dy = try normView(node, gradients[(upstream ?? node).output.index]!)
        // Where the node writes each input's gradient, and whether it adds to it.
        var target: [Int: (Tensor, Bool)] = [:]
        for g in step.inputs { target[g.input] = (try normView(node, gradients[node.inputs[g.input].index]!), g.accumulate) }
        let x = try normView(node, values[node.inputs[0].index]), y = try normView(node, values[node.output.index])
        let dx = target[0]?.0, accumulate = target[0]?.1 ?? false
        switch node.operation {
        case let .conv(conv, bias):
            // Parameter gradients overwrite; the input gradient may add (fan-out).
            if part == .parameters {
                try conv.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: nil, dweight: grad(node, 0),
                                  dbias: bias ? grad(node, 1) : nil, workspace: workspace, algorithm: convChoices[k]?.weights)
            } else if let dx {
                try conv.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: dx, dweight: nil, dbias: nil,
                                  workspace: workspace, accumulate: accumulate, algorithm: convChoices[k]?.data)
            }
        case let .deformConv(op, bias):
            // Parameter gradients overwrite; the input, offset and mask gradients may add (fan-out).
            var adds: DeformConv2D.Accumulation = []
            if target[0]?.1 == true { adds.insert(.input) }
            if target[1]?.1 == true { adds.insert(.offset) }
            if target[2]?.1 == true { adds.insert(.mask) }
            try op.backward(queue, x: x, offset: values[node.inputs[1].index],
                            mask: op.modulated ? values[node.inputs[2].index] : nil, weight: param(node, 0), dy: dy, dx: dx,
                            doffset: target[1]?.0, dmask: target[2]?.0, dweight: grad(node, 0),
                            dbias: bias ? grad(node, 1) : nil, workspace: workspace, accumulate: adds)
        case let .dcls(op, bias):
            if part == .parameters {
                try op.backward(queue, x: x, weight: param(node, 0), positions: param(node, 1), dy: dy, dx: nil,
                                dweight: grad(node, 0), dpositions: grad(node, 1), dbias: bias ? grad(node, 2) : nil,
                                workspace: workspace)
            } else if let dx {
                try op.backward(queue, x: x, weight: param(node, 0), positions: param(node, 1), dy: dy, dx: dx, dweight: nil,
                                dpositions: nil, dbias: nil, workspace: workspace, accumulateInput: accumulate)
            }
        case let .dendritic(op, bias):
            if part == .parameters {
                try op.backward(queue, x: x, weight: param(node, 0), dendrites: param(node, 1), dy: dy, dx: nil,
                                dweight: grad(node, 0), ddendrites: grad(node, 1), dbias: bias ? grad(node, 2) : nil,
                                workspace: workspace)
            } else if let dx {
                try op.backward(queue, x: x, weight: param(node, 0), dendrites: param(node, 1), dy: dy, dx: dx, dweight: nil,
                                ddendrites: nil, dbias: nil, workspace: workspace, accumulateInput: accumulate)
            }
        case let .linear(_, bias):
            if part == .parameters {
                try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: nil, dweight: grad(node, 0),
                                    dbias: bias ? grad(node, 1) : nil)
            } else if let dx {
                try Linear.backward(queue, x: x, weight: param(node, 0), dy: dy, dx: dx, dweight: nil, dbias: nil,
                                    accumulate: accumulate)
            }
        case .batchNorm(let relu, _, _), .groupNorm(_, let relu, _):
            var groups = 0
            if case let .groupNorm(g, _, _) = node.operation { groups = g }
            var consumer: NormConsumer? = nil
            if let fusion, let upstream {
                consumer = NormConsumer(mask: upstream.operation.hasReLU ? try normView(node, values[upstream.output.index]) : nil,
                                        shortcut: try fusion.shortcutInput.map { i throws(CLNetError) in
                                            try normView(node, gradients[upstream.inputs[i].index]!) })
            }
            // Parameter gradients overwrite; when the input gradient adds, it is a second call.
            let calls: [(Tensor?, Bool, Bool)] = accumulate ? [(nil, true, false), (dx, false, true)] : [(dx, true, false)]
            for (d, params, acc) in calls {
                if groups == 0 {
                    try BatchNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1),
                                           workspace: nodeWorkspaces[k]!, dy: dy, dx: d, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, consumer: consumer,
                                           accumulate: acc, synchronizedOver: batchNormCommunicator)
                } else {
                    try GroupNorm.backward(queue, x: x, gamma: param(node, 0), beta: param(node, 1), groups: groups,
                                           workspace: nodeWorkspaces[k]!, dy: dy, dx: d, dgamma: params ? grad(node, 0) : nil,
                                           dbeta: params ? grad(node, 1) : nil, relu: relu, consumer: consumer,
                                           accumulate: acc)
                }
            }
        case .relu:
            if let dx { try ReLU.backward(queue, y: y, dy: dy, dx: dx, accumulate: accumulate) }
        case let .add(relu):
            for i in target.keys.sorted() {
                let (d, acc) = target[i]!
                try Add.backward(queue, y: y, dy: dy, dx: d, relu: relu, accumulate: acc)
            }
        case let .maxPool(window):
            if let dx { try MaxPool.backward(queue, dy: dy, indices: poolIndices[k]!, dx: dx, window: window, accumulate: accumulate) }
        case let .avgPool(window):
            if let dx { try AvgPool.backward(queue, dy: dy, dx: dx, window: window, accumulate: accumulate) }
        case .globalAvgPool:
            if let dx { try GlobalAvgPool.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .concat:
            var start = 0
            for (i, v) in node.inputs.enumerated() {
                let c = graph.shape(of: v).c
                if let (d, acc) = target[i] {
                    try queue.copy(from: try dy.slice(channels: start..<start + c), to: d, accumulate: acc)
                }
                start += c
            }
        case let .channelSlice(op):
            if let dx { try op.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .stochasticDepth:
            if let dx {
                try ChannelScale.backward(queue, x: x, scale: try storedWorkspace(k), dy: dy, dx: dx, dscale: nil,
                                          accumulate: accumulate)
            }
        case let .dropout(p):
            if let dx {
                try Dropout.backward(queue, dy: dy, dx: dx, p: p, seed: StepRandomness.nodeSeed(stepSeed, node: k),
                                     accumulate: accumulate)
            }
        case let .padShortcut(op):
            if let dx { try op.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .sigmoid:
            if let dx { try Sigmoid.backward(queue, y: y, dy: dy, dx: dx, accumulate: accumulate) }
        case .prelu:
            // The slope's gradient overwrites; an input gradient that adds is a second call.
            let calls: [(Tensor?, Tensor?, Bool)] = accumulate ? [(nil, grad(node, 0), false), (dx, nil, true)]
                : [(dx, grad(node, 0), false)]
            for (d, dslope, acc) in calls where d != nil || dslope != nil {
                try PReLU.backward(queue, x: x, slope: param(node, 0), dy: dy, dx: d, dslope: dslope, accumulate: acc)
            }
        case let .spikingNeuron(neuron):
            if let dx { try neuron.backward(queue, x: x, dy: dy, dx: dx, accumulate: accumulate) }
        case let .timeRepeat(steps):
            if let dx { try TimeSteps.sum(queue, big: dy, small: dx, steps: steps, accumulate: accumulate) }
        case let .timeMean(steps):
            if let dx { try TimeSteps.broadcast(queue, small: dy, big: dx, steps: steps, scale: 1 / Float(steps), accumulate: accumulate) }
        case let .sewConnect(connect):
            try connect.backward(queue, shortcut: x, branch: values[node.inputs[1].index], dy: dy, dshortcut: target[0]?.0,
                                 dbranch: target[1]?.0, accumulateShortcut: target[0]?.1 ?? false,
                                 accumulateBranch: target[1]?.1 ?? false)
        case .channelScale:
            let s = values[node.inputs[1].index]
            if let (d, acc) = target[0] { try ChannelScale.backward(queue, x: x, scale: s, dy: dy, dx: d, dscale: nil, accumulate: acc) }
            if let (d, acc) = target[1] { try ChannelScale.backward(queue, x: x, scale: s, dy: dy, dx: nil, dscale: d, accumulate: acc) }
        case let .selectiveSum(m):
            try SelectiveSum.backward(queue, branches: node.inputs.prefix(m).map { values[$0.index] },
                                      logits: values[node.inputs[m].index], dy: dy, dbranches: (0..<m).map { target[$0]?.0 },
                                      dlogits: target[m]?.0, accumulate: (0..<m).map { target[$0]?.1 ?? false },
                                      accumulateLogits: target[m]?.1 ?? false)
        case let .scalarAffine(hasScale, hasBias):
            try ScalarAffine.backward(queue, x: x, parameters: try scalars(node, gradient: false)!, hasScale: hasScale,
                                      hasBias: hasBias, dy: dy, dx: dx, dparameters: try scalars(node, gradient: true),
                                      workspace: nodeWorkspaces[k], accumulate: accumulate)
        case let .softmaxCrossEntropy(smoothing):
            if let dx {
                try SoftmaxCrossEntropy.backward(queue, logits: x, labels: labels!, dlogits: dx, labelSmoothing: smoothing,
                                                 scale: lossGradientScale, accumulate: accumulate)
            }
        case let .distillation(d):
            if let dx {
                try d.backward(queue, logits: x, teacher: values[node.inputs[1].index], labels: labels!, dlogits: dx,
                               scale: lossGradientScale, accumulate: accumulate)
            }
        case let .pixelCrossEntropy(ignore):
            if let dx {
                try PixelCrossEntropy.backward(queue, logits: x, labels: labels!, workspace: nodeWorkspaces[k]!, dlogits: dx,
                                               ignoreIndex: ignore, scale: lossGradientScale, accumulate: accumulate)
            }
        case .meanSquaredError:
            // The target is data: it gets no gradient.
            if let dx {
                try MeanSquaredError.backward(queue, prediction: x, target: values[node.inputs[1].index], dx: dx,
                                              scale: lossGradientScale, accumulate: accumulate)
            }
        case let .upsample(op):
            if let dx { try op.backward(queue, dy: dy, dx: dx, accumulate: accumulate) }
        case .multiply:
            for i in target.keys.sorted() {
                let (d, acc) = target[i]!
                try Multiply.backward(queue, other: values[node.inputs[1 - i].index], dy: dy, dx: d, accumulate: acc)
            }
        }
    }

}
