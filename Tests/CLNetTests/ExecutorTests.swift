import CLNet
import Testing

@Suite("Executor: graphs on OpenCL against the CPU reference")
struct ExecutorTests {
    /// A random small graph: convolutions with random groups and strides, batch and group norm,
    /// residual additions (fan-out), dense concatenations, channel slices, pools, then a classifier and its loss.
    static func randomGraph(_ rng: inout SeededGenerator) throws -> (graph: Graph, input: Shape, logits: Value) {
        var b = GraphBuilder()
        let input: Shape = [Int.random(in: 1...3, using: &rng), Int.random(in: 2...5, using: &rng),
                            Int.random(in: 6...9, using: &rng), Int.random(in: 6...9, using: &rng)]
        var x = try b.input("x", shape: input)
        var shape = input
        for k in 0..<Int.random(in: 3...5, using: &rng) {
            let c = shape.c
            switch Int.random(in: 0...6, using: &rng) {
            case 0:
                let groups = [1, c, c % 2 == 0 ? 2 : 1].randomElement(using: &rng)!
                let out = groups * Int.random(in: 1...3, using: &rng) * max(1, 4 / groups)
                let stride = shape.h >= 6 && Bool.random(using: &rng) ? 2 : 1
                x = try b.conv(x, Conv2D(inChannels: c, outChannels: out, kernel: 3, stride: stride, padding: 1, groups: groups),
                               name: "b\(k).conv")
                // No bias before a norm: its true gradient is zero, which a relative error cannot judge.
                x = try b.batchNorm(x, relu: true, name: "b\(k).bn")
            case 1:
                var y = try b.conv(x, Conv2D(inChannels: c, outChannels: c, kernel: 3, padding: 1), name: "b\(k).conv1")
                y = try b.batchNorm(y, relu: true, name: "b\(k).bn1")
                y = try b.conv(y, Conv2D(inChannels: c, outChannels: c, kernel: 1), name: "b\(k).conv2")
                y = try b.batchNorm(y, name: "b\(k).bn2")
                x = try b.add(y, x, relu: true, name: "b\(k).add")
            case 2:
                var d = try b.conv(x, Conv2D(inChannels: c, outChannels: 3, kernel: 3, padding: 1), name: "b\(k).conv")
                d = try b.groupNorm(d, groups: [1, 3].randomElement(using: &rng)!, relu: true, name: "b\(k).gn")
                x = try b.concat([x, d], name: "b\(k).concat")
            case 3:
                // The ReLU comes first: after a convolution with no norm, it could leave a single live channel,
                // and a convolution and norm after that have a weight gradient that is zero but for the norm's
                // eps, which float32 gets to only about 1e-3 (see the norm shifts below).
                x = try b.relu(x, name: "b\(k).relu")
                x = try b.conv(x, Conv2D(inChannels: c, outChannels: c + 1, kernel: 1), bias: true, name: "b\(k).conv")
            case 4:
                // A block with a projection shortcut: two branches from one value.
                let stride = shape.h >= 6 ? 2 : 1
                var s = try b.conv(x, Conv2D(inChannels: c, outChannels: c + 2, kernel: 1, stride: stride), name: "b\(k).proj")
                s = try b.batchNorm(s, name: "b\(k).proj_bn")
                var y = try b.conv(x, Conv2D(inChannels: c, outChannels: c + 2, kernel: 3, stride: stride, padding: 1),
                                   name: "b\(k).conv")
                y = try b.batchNorm(y, name: "b\(k).bn")
                x = try b.add(y, s, relu: true, name: "b\(k).add")
            case 5 where c >= 2:
                // A selective kernel's split input: each half through its own convolution, joined again,
                // so that the input's gradient is the sum of two slices' gradients.
                let half = c / 2
                var parts: [Value] = []
                for (i, range) in [0..<half, half..<c].enumerated() {
                    let part = try b.channelSlice(x, channels: range, name: "b\(k).slice\(i)")
                    let conv = try b.conv(part, Conv2D(inChannels: range.count, outChannels: 2, kernel: 3, padding: 1),
                                          name: "b\(k).conv\(i)")
                    parts.append(try b.batchNorm(conv, relu: true, name: "b\(k).bn\(i)"))
                }
                x = try b.concat(parts, name: "b\(k).concat")
            default:
                if shape.h >= 4 && shape.w >= 4 {
                    x = Bool.random(using: &rng)
                        ? try b.maxPool(x, Pool2D(kernel: 3, stride: 2, padding: 1), name: "b\(k).maxpool")
                        : try b.avgPool(x, Pool2D(kernel: 2), name: "b\(k).avgpool")
                } else {
                    x = try b.relu(x, name: "b\(k).relu")
                }
            }
            shape = b.graph.shape(of: x)
        }
        let pooled = try b.globalAvgPool(x, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: 5, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, labelSmoothing: 0.1, name: "loss")
        return (b.graph, input, logits)
    }

    @Test(arguments: 0..<6)
    func randomGraphMatchesReference(_ trial: Int) throws {
        var rng = freshGenerator("executor random graph \(trial)")
        let (graph, inputShape, logits) = try Self.randomGraph(&rng)
        print("graph: \(graph.nodes.map(\.name).joined(separator: " "))")
        var params: [String: [Double]] = [:]
        for p in graph.parameters {
            switch p.role {
            case .normWeight, .runningVar: params[p.name] = randomDoubles(p.shape.count, using: &rng, in: 0.5...1.5)
            // Non-negative shifts keep every channel alive through a norm (and an add) and its ReLU: its
            // normalised part has mean zero and so a positive element. A dead channel is no test of the
            // kernels, and all but one dead makes the next convolution's gradient cancel (see case 3).
            case .normBias: params[p.name] = randomDoubles(p.shape.count, using: &rng, in: 0...0.5)
            default: params[p.name] = randomDoubles(p.shape.count, using: &rng, in: -0.5...0.5)
            }
        }
        let x = randomDoubles(inputShape.count, using: &rng)
        let labels = (0..<inputShape.n).map { _ in Int.random(in: 0..<5, using: &rng) }

        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["x": x], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        // How far float32 storage alone moves each gradient. A gradient that cancels (a sum of terms
        // far larger than itself, such as a norm's scale whose output gradient is nearly orthogonal
        // to its normalised input) cannot be matched by any float32 executor to a fixed 1e-4, and
        // fails one graph in a few hundred; the device's own arithmetic inside a kernel has been
        // measured at up to 25 times this storage error on such gradients, and 1-5 times elsewhere.
        var rounded = try ReferenceExecutor(graph: graph, parameters: params)
        rounded.roundsToFloat32 = true
        let roundedGrads = try rounded.backward(values: try rounded.forward(["x": x], labels: labels, training: true),
                                                labels: labels).parameters

        // The same step on 1, 2 and 4 queues: bitwise the same results.
        var runs: [[String: [Float]]] = []
        var executor: Executor! = nil
        for queues in [1, 2, 4] {
            executor = try Executor(graph: graph, context: try Shared.context(), training: true,
                                    keep: [logits, graph.inputs[0].value], queues: queues)
            #expect(executor.plan.peakBytes <= executor.plan.naiveBytes)
            for (name, v) in params { try executor.setParameter(name, v.map(Float.init)) }
            // Two steps, so that the second runs over memory and events the first left behind.
            for _ in 0..<2 {
                try executor.forward(["x": x.map(Float.init)], labels: labels)
                try executor.backward()
            }
            var out: [String: [Float]] = ["logits": try executor.read(logits), "loss": [try executor.loss().loss]]
            for p in graph.parameters where p.trainable { out[p.name] = try executor.gradient(p.name) }
            runs.append(out)
        }
        #expect(runs[1] == runs[0], "2 queues differ from 1")
        #expect(runs[2] == runs[0], "4 queues differ from 1")

        let loss = try executor.loss().loss
        #expect(relativeError([loss], [values[graph.nodes[graph.lossNode!].output.index][0]]) <= 1e-4, "loss")
        #expect(relativeError(try executor.read(logits), values[logits.index]) <= 1e-4, "logits")
        for p in graph.parameters where p.trainable {
            let error = relativeError(try executor.gradient(p.name), grads.parameters[p.name]!)
            // Bound: 1e-4, plus 30 times the storage error (see above; about 1e-7 where nothing
            // cancels), and never over 1e-2, so that a wrong or NaN gradient still fails.
            let bound = min(1e-2, 1e-4 + 30 * relativeError(roundedGrads[p.name]!, grads.parameters[p.name]!))
            #expect(error <= bound, "gradient of \(p.name): relative error \(error), bound \(bound)")
        }
        // Running statistics after the reference's second step too.
        _ = try reference.forward(["x": x], labels: labels, training: true)
        for p in graph.parameters where !p.trainable {
            #expect(relativeError(try executor.parameter(p.name), reference.parameters[p.name]!) <= 1e-5, "\(p.name)")
        }
        // No gradient is computed for the graph input.
        #expect(try executor.readGradient(graph.inputs[0].value) == nil)

        // Inference: running statistics, no backward, and a smaller plan.
        var inferenceReference = try ReferenceExecutor(graph: graph, parameters: params)
        let inferred = try inferenceReference.forward(["x": x], labels: labels, training: false)
        let inference = try Executor(graph: graph, context: try Shared.context(), training: false, keep: [logits])
        for (name, v) in params { try inference.setParameter(name, v.map(Float.init)) }
        try inference.forward(["x": x.map(Float.init)], labels: labels)
        #expect(relativeError(try inference.read(logits), inferred[logits.index]) <= 1e-5, "inference logits")
        #expect(inference.plan.peakBytes < executor.plan.peakBytes)
        #expect(throws: CLNetError.self) { try inference.backward() }
    }

    /// A node whose output never reaches the loss gets no backward step and no gradient.
    @Test func deadBranchesGetNoGradient() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 3, 4, 4])
        let a = try b.conv(x, Conv2D(inChannels: 3, outChannels: 3, kernel: 1), name: "a")
        _ = try b.conv(a, Conv2D(inChannels: 3, outChannels: 2, kernel: 1), name: "unused")
        let p = try b.globalAvgPool(a, name: "p")
        _ = try b.softmaxCrossEntropy(p, name: "loss")
        #expect(!b.graph.backwardSteps.map { b.graph.nodes[$0.node].name }.contains("unused"))
        var rng = freshGenerator("dead branch")
        var params: [String: [Double]] = [:]
        for q in b.graph.parameters { params[q.name] = randomDoubles(q.shape.count, using: &rng) }
        var reference = try ReferenceExecutor(graph: b.graph, parameters: params)
        let values = try reference.forward(["x": randomDoubles(96, using: &rng)], labels: [0, 2], training: true)
        let grads = try reference.backward(values: values, labels: [0, 2])
        #expect(grads.parameters["a.weight"] != nil && grads.parameters["unused.weight"] == nil)
    }

    /// A convolution with a bias runs the ReLU or addition right after it in its bias pass (a
    /// folded network's blocks), except where its output is kept, feeds two nodes, or the next
    /// node is something else. Training (forward and gradients, on 1 and 3 queues) and inference
    /// match the reference, and so does training with the fusion switched off.
    @Test func convolutionEpiloguesMatchReference() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 7, 7])
        let c1 = try b.conv(x, Conv2D(inChannels: 4, outChannels: 6, kernel: 3, padding: 1), bias: true, name: "c1")
        let r1 = try b.relu(c1, name: "r1")                                  // fused: ReLU
        let c2 = try b.conv(r1, Conv2D(inChannels: 6, outChannels: 6, kernel: 3, padding: 1), bias: true, name: "c2")
        let a2 = try b.add(c2, r1, relu: true, name: "a2")                   // fused: residual first
        let c3 = try b.conv(a2, Conv2D(inChannels: 6, outChannels: 6, kernel: 1), bias: true, name: "c3")
        let a3 = try b.add(a2, c3, name: "a3")                               // fused: residual second, no ReLU
        let c4 = try b.conv(a3, Conv2D(inChannels: 6, outChannels: 5, kernel: 3, stride: 2, padding: 1), bias: true, name: "c4")
        let r4 = try b.relu(c4, name: "r4")                                  // not fused: c4 is kept
        let c5 = try b.conv(r4, Conv2D(inChannels: 5, outChannels: 5, kernel: 1), bias: true, name: "c5")
        let r5 = try b.relu(c5, name: "r5")                                  // not fused: c5 feeds two nodes
        let a5 = try b.add(r5, c5, name: "a5")
        let c6 = try b.conv(a5, Conv2D(inChannels: 5, outChannels: 5, kernel: 1), bias: true, name: "c6")
        let p = try b.globalAvgPool(c6, name: "p")                           // not fused: not a ReLU or addition
        let logits = try b.linear(p, outFeatures: 3, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, name: "loss")
        let graph = b.graph
        let index = { (name: String) in graph.nodes.firstIndex { $0.name == name }! }

        var rng = freshGenerator("conv epilogues")
        var params: [String: [Double]] = [:]
        for q in graph.parameters { params[q.name] = randomDoubles(q.shape.count, using: &rng, in: -0.5...0.5) }
        let input = randomDoubles(graph.shape(of: x).count, using: &rng), labels = [1, 2]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["x": input], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        for (training, fusions) in [(true, MemoryPlan.Fusions.all), (false, .all), (true, [])] {
            for queues in training ? [1, 3] : [1] {
                let e = try Executor(graph: graph, context: try Shared.context(), training: training, keep: [c4, logits],
                                     queues: queues, fusions: fusions)
                #expect(e.plan.epilogues == (fusions.isEmpty ? [:]
                    : [index("c1"): index("r1"), index("c2"): index("a2"), index("c3"): index("a3")]))
                for (name, v) in params { try e.setParameter(name, v.map(Float.init)) }
                try e.forward(["x": input.map(Float.init)], labels: labels)
                #expect(relativeError(try e.read(logits), values[logits.index]) <= 1e-5, "logits, \(queues) queues")
                #expect(relativeError(try e.read(c4), values[c4.index]) <= 1e-5, "kept c4")
                guard training else { continue }
                try e.backward()
                for q in graph.parameters {
                    let error = relativeError(try e.gradient(q.name), grads.parameters[q.name]!)
                    #expect(error <= 1e-4, "gradient of \(q.name), \(queues) queues: relative error \(error)")
                }
            }
        }
    }

    /// A norm does the backward of the ReLU or addition after it (`Fusions.normBackward`) where
    /// the plan allows, and not where it does not. Fused and unfused runs, on 1 and 3 queues,
    /// match the reference and each other.
    @Test func normBackwardFusionsMatchReference() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 7, 7])
        let c1 = try b.conv(x, Conv2D(inChannels: 4, outChannels: 6, kernel: 3, padding: 1), name: "c1")
        let n1 = try b.batchNorm(c1, name: "n1")
        let r1 = try b.relu(n1, name: "r1")                                  // fused: a ReLU alone
        let c2 = try b.conv(r1, Conv2D(inChannels: 6, outChannels: 6, kernel: 3, padding: 1), name: "c2")
        let n2 = try b.batchNorm(c2, relu: true, name: "n2")
        let c3 = try b.conv(n2, Conv2D(inChannels: 6, outChannels: 6, kernel: 1), name: "c3")
        let n3 = try b.batchNorm(c3, name: "n3")
        let a3 = try b.add(n3, r1, relu: true, name: "a3")                   // fused: identity shortcut
        let n4 = try b.groupNorm(a3, groups: 3, relu: true, name: "n4")
        let a4 = try b.add(n4, a3, name: "a4")                               // fused: the shortcut is n4's own input
        let p5 = try b.conv(a4, Conv2D(inChannels: 6, outChannels: 8, kernel: 1, stride: 2), name: "p5")
        let s5 = try b.batchNorm(p5, name: "s5")
        let c5 = try b.conv(a4, Conv2D(inChannels: 6, outChannels: 8, kernel: 3, stride: 2, padding: 1), name: "c5")
        let n5 = try b.batchNorm(c5, name: "n5")
        let a5 = try b.add(n5, s5, relu: true, name: "a5")                   // fused into n5, whose step comes first
        let n6 = try b.batchNorm(a5, name: "n6")
        let c6 = try b.conv(a5, Conv2D(inChannels: 8, outChannels: 8, kernel: 1), name: "c6")
        let a6 = try b.add(n6, c6, relu: true, name: "a6")                   // not fused: c6's step comes between
        let n7 = try b.batchNorm(a6, name: "n7")
        let r7 = try b.relu(n7, name: "r7")                                  // not fused: n7 is kept
        let pool = try b.globalAvgPool(r7, name: "pool")
        let logits = try b.linear(pool, outFeatures: 3, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, name: "loss")
        let graph = b.graph
        let index = { (name: String) in graph.nodes.firstIndex { $0.name == name }! }

        var rng = freshGenerator("norm backward fusions")
        var params: [String: [Double]] = [:]
        for q in graph.parameters {
            params[q.name] = q.role == .normWeight || q.role == .runningVar ? randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
                : q.role == .normBias ? randomDoubles(q.shape.count, using: &rng, in: 0...0.5)
                : randomDoubles(q.shape.count, using: &rng, in: -0.5...0.5)
        }
        let input = randomDoubles(graph.shape(of: x).count, using: &rng), labels = [1, 2]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["x": input], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        var runs: [[String: [Float]]] = []
        for fusions in [MemoryPlan.Fusions.all, [], MemoryPlan.Fusions.all.union(.convolutionStatistics)] {
            for queues in [1, 3] {
                let e = try Executor(graph: graph, context: try Shared.context(), training: true, keep: [n7, logits],
                                     queues: queues, fusions: fusions)
                let want: [Int: MemoryPlan.NormFusion] = fusions.isEmpty ? [:] : [
                    index("n1"): .init(consumer: index("r1"), shortcutInput: nil),
                    index("n3"): .init(consumer: index("a3"), shortcutInput: 1),
                    index("n4"): .init(consumer: index("a4"), shortcutInput: 1),
                    index("n5"): .init(consumer: index("a5"), shortcutInput: 1),
                ]
                #expect(e.plan.normFusions == want)
                // Each convolution writes the statistics of the batch norm right after it.
                let pairs = ["c1": "n1", "c2": "n2", "c3": "n3", "p5": "s5", "c5": "n5"]
                #expect(e.plan.convolutionStatistics == (!fusions.contains(.convolutionStatistics) ? [:] :
                    Dictionary(uniqueKeysWithValues: pairs.map { (index($0.key), index($0.value)) })))
                for (name, v) in params { try e.setParameter(name, v.map(Float.init)) }
                try e.forward(["x": input.map(Float.init)], labels: labels)
                try e.backward()
                var out: [String: [Float]] = [:]
                for q in graph.parameters where q.trainable {
                    out[q.name] = try e.gradient(q.name)
                    let error = relativeError(out[q.name]!, grads.parameters[q.name]!)
                    #expect(error <= 1e-4, "gradient of \(q.name), fusions \(fusions.rawValue), \(queues) queues: \(error)")
                }
                runs.append(out)
            }
        }
        for (name, fused) in runs[0] {
            #expect(relativeError(fused, runs[2][name]!.map(Double.init)) <= 1e-6, "fused against unfused, \(name)")
            // With the convolutions' statistics, they are summed in other parts (the convolutions'
            // blocks), which rounds differently: a few float32 ulps in a mean, grown by the layers after it.
            #expect(relativeError(runs[4][name]!, runs[2][name]!.map(Double.init)) <= 1e-5,
                    "fused with the convolutions' statistics against unfused, \(name)")
        }
    }

    /// A dense block: each norm reads a longer prefix of the block's buffer and takes the
    /// statistics of the channels before from the norm before it (`Fusions.sharedStatistics`).
    /// Shared and unshared runs on 1 and 3 queues match the reference and each other, and the
    /// running statistics too.
    @Test func sharedStatisticsMatchReference() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 7, 7])
        let s = try b.conv(x, Conv2D(inChannels: 4, outChannels: 6, kernel: 3, padding: 1), name: "stem")
        let n0 = try b.batchNorm(s, relu: true, name: "n0")
        let c1 = try b.conv(n0, Conv2D(inChannels: 6, outChannels: 3, kernel: 3, padding: 1), name: "c1")
        let cat1 = try b.concat([s, c1], name: "cat1")
        let n1 = try b.batchNorm(cat1, relu: true, name: "n1")                  // takes n0's 6 channels
        let c2 = try b.conv(n1, Conv2D(inChannels: 9, outChannels: 3, kernel: 1), name: "c2")
        let cat2 = try b.concat([cat1, c2], name: "cat2")
        let g2 = try b.groupNorm(cat2, groups: 3, name: "g2")                   // group norm: measures its own
        let n2 = try b.batchNorm(cat2, relu: true, name: "n2")                  // takes n1's 9
        let n3 = try b.batchNorm(cat2, name: "n3")                              // takes all 12 of n2's
        let sum = try b.add(try b.add(n2, n3, name: "a23"), g2, name: "a")
        let pool = try b.globalAvgPool(sum, name: "pool")
        let logits = try b.linear(pool, outFeatures: 3, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, name: "loss")
        let graph = b.graph
        let index = { (name: String) in graph.nodes.firstIndex { $0.name == name }! }

        var rng = freshGenerator("shared statistics")
        var params: [String: [Double]] = [:]
        for q in graph.parameters {
            params[q.name] = q.role == .normWeight || q.role == .runningVar ? randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
                : randomDoubles(q.shape.count, using: &rng, in: -0.5...0.5)
        }
        let input = randomDoubles(graph.shape(of: x).count, using: &rng, in: -1...2), labels = [1, 2]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["x": input], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        var runs: [[String: [Float]]] = []
        for fusions in [MemoryPlan.Fusions.all, []] {
            for queues in [1, 3] {
                let e = try Executor(graph: graph, context: try Shared.context(), training: true, keep: [logits],
                                     queues: queues, fusions: fusions)
                let want = fusions.isEmpty ? [:] : [index("n1"): index("n0"), index("n2"): index("n1"), index("n3"): index("n2")]
                #expect(e.plan.sharedStatistics == want)
                for (name, v) in params { try e.setParameter(name, v.map(Float.init)) }
                try e.forward(["x": input.map(Float.init)], labels: labels)
                let logitsError = relativeError(try e.read(logits), values[logits.index])
                #expect(logitsError <= 1e-5, "logits, fusions \(fusions.rawValue), \(queues) queues: \(logitsError)")
                try e.backward()
                var out: [String: [Float]] = [:]
                for q in graph.parameters {
                    out[q.name] = q.trainable ? try e.gradient(q.name) : try e.parameter(q.name)
                    let want = q.trainable ? grads.parameters[q.name]! : reference.parameters[q.name]!
                    let error = relativeError(out[q.name]!, want)
                    #expect(error <= (q.trainable ? 1e-4 : 1e-5),
                            "\(q.trainable ? "gradient" : "value") of \(q.name), fusions \(fusions.rawValue), \(queues) queues: \(error)")
                }
                runs.append(out)
            }
        }
        for (name, shared) in runs[0] {
            // The statistics are summed in other parts (the earlier norm's split, the stem's
            // Winograd rows), which rounds differently.
            #expect(relativeError(shared, runs[2][name]!.map(Double.init)) <= 1e-5, "shared against unshared, \(name)")
        }
    }

    @Test func backwardStepsSumFanOutAndSkipInputs() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 3, 4, 4])
        let a = try b.conv(x, Conv2D(inChannels: 3, outChannels: 3, kernel: 1), name: "a")
        let r = try b.relu(a, name: "r")
        let s = try b.add(r, a, name: "s")  // a feeds r and s: its gradient is a sum
        let p = try b.globalAvgPool(s, name: "p")
        _ = try b.softmaxCrossEntropy(p, name: "loss")
        let steps = b.graph.backwardSteps
        #expect(steps.map { b.graph.nodes[$0.node].name } == ["loss", "p", "s", "r", "a"])
        let add = steps[2], relu = steps[3], conv = steps[4]
        #expect(add.inputs == [.init(input: 0, accumulate: false), .init(input: 1, accumulate: false)])
        #expect(relu.inputs == [.init(input: 0, accumulate: true)])
        #expect(conv.inputs.isEmpty, "no gradient for the graph input")
    }
}

@Suite("Executor with an optimizer")
struct ExecutorOptimizerTests {
    /// Two SGD steps (momentum, Nesterov, weight decay only on weights) through the executor
    /// match the reference, and 1 and 3 queues agree bitwise.
    @Test func sgdStepsMatchReference() throws {
        var rng = freshGenerator("executor sgd")
        let (graph, input, _) = try ExecutorTests.randomGraph(&rng)
        var params: [String: [Double]] = [:]
        for p in graph.parameters {
            params[p.name] = p.role == .normWeight || p.role == .runningVar
                ? randomDoubles(p.shape.count, using: &rng, in: 0.5...1.5)
                : randomDoubles(p.shape.count, using: &rng, in: -0.5...0.5)
        }
        let x = randomDoubles(input.count, using: &rng)
        let labels = (0..<input.n).map { _ in Int.random(in: 0..<5, using: &rng) }
        let sgd = SGD(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-3, nesterov: true)

        // The reference: forward, backward, update, twice.
        var current = params
        var momentum: [String: [Double]] = [:]
        var losses: [Double] = []
        for _ in 0..<2 {
            var reference = try ReferenceExecutor(graph: graph, parameters: current)
            let values = try reference.forward(["x": x], labels: labels, training: true)
            losses.append(values[graph.nodes[graph.lossNode!].output.index][0])
            let grads = try reference.backward(values: values, labels: labels)
            current = reference.parameters
            for p in graph.parameters where p.trainable {
                let decay = p.role == .weight ? Double(sgd.weightDecay) : 0
                let m = momentum[p.name] ?? [Double](repeating: 0, count: p.shape.count)
                let r = Reference.sgdStep(parameters: current[p.name]!, gradients: grads.parameters[p.name]!, momentumBuffer: m,
                                          learningRate: Double(sgd.learningRate), momentum: Double(sgd.momentum),
                                          weightDecay: decay, nesterov: sgd.nesterov)
                current[p.name] = r.parameters
                momentum[p.name] = r.momentum
            }
        }

        var runs: [[String: [Float]]] = []
        for queues in [1, 3] {
            let executor = try Executor(graph: graph, context: try Shared.context(), training: true, queues: queues,
                                        optimizer: sgd, decayOnlyWeights: true)
            for (name, v) in params { try executor.setParameter(name, v.map(Float.init)) }
            // Both steps are enqueued before either loss is read.
            var readings: [LossReading] = []
            for _ in 0..<2 {
                readings.append(try executor.forward(["x": x.map(Float.init)], labels: labels)!)
                try executor.backward()
            }
            for (step, reading) in readings.enumerated() {
                let got = try reading.value().loss
                #expect(relativeError([got], [losses[step]]) <= 1e-4, "loss of step \(step): \(got) vs \(losses[step])")
            }
            var out: [String: [Float]] = [:]
            for p in graph.parameters { out[p.name] = try executor.parameter(p.name) }
            runs.append(out)
        }
        #expect(runs[1] == runs[0], "3 queues differ from 1")
        for p in graph.parameters {
            let error = relativeError(runs[0][p.name]!, current[p.name]!)
            #expect(error <= 1e-4, "\(p.name) after two steps: relative error \(error)")
        }
    }
}

@Suite("Training end to end")
struct TrainingSmokeTests {
    /// A small CIFAR ResNet, initialised as the paper, learns a fixed batch: the loss falls.
    @Test func lossFallsOnAFixedBatch() throws {
        var rng = freshGenerator("overfit")
        let (graph, _) = try ModelSpec.graph("cifar_resnet:depth=8,channels=1,classes=4", batch: 8, size: 12)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true,
                                    optimizer: SGD(learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4), decayOnlyWeights: true)
        try executor.initialize(seed: 1)
        let x = randomFloats(8 * 144, using: &rng)
        let labels = (0..<8).map { $0 % 4 }
        var readings: [LossReading] = []
        for _ in 0..<30 {
            readings.append(try executor.forward(["input": x], labels: labels)!)
            try executor.backward()
        }
        let losses = try readings.map { try $0.value().loss }
        print("losses: \(losses)")
        let finite = losses.allSatisfy { $0.isFinite }
        #expect(finite)
        #expect(losses.last! < losses.first! * 0.5, "loss \(losses.first!) -> \(losses.last!)")
    }
}
