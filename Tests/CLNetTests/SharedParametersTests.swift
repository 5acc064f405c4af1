import CLNet
import Testing

@Suite("Shared parameters: one parameter used by several nodes gets the sum of their gradients")
struct SharedParametersTests {
    /// A stem convolution, then a recursive block applied three times with the same weights
    /// (DRRN's recursion: convolution, sigmoid and batch norm, plus the stem's output), pooled
    /// into a classifier. Sigmoids keep the loss smooth for finite differences.
    static func graph(batch: Int = 2) throws -> (Graph, Value) {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, 2, 5, 6])
        let stem = try b.conv(x, Conv2D(inChannels: 2, outChannels: 3, kernel: 3, padding: 1), bias: true, name: "stem")
        var h = stem
        for r in 0..<3 {
            let c = r == 0 ? try b.conv(h, Conv2D(inChannels: 3, outChannels: 3, kernel: 3, padding: 1), bias: true, name: "block.conv")
                : try b.reapply("block.conv", to: [h], name: "block.\(r).conv")
            // The sigmoid before the norm, so that the convolution's bias has a gradient.
            let s = try b.sigmoid(c, name: "block.\(r).sigmoid")
            let n = r == 0 ? try b.batchNorm(s, name: "block.bn") : try b.reapply("block.bn", to: [s], name: "block.\(r).bn")
            h = try b.add(n, stem, name: "block.\(r).add")
        }
        let pooled = try b.globalAvgPool(h, name: "pool")
        let logits = try b.linear(pooled, outFeatures: 4, name: "fc")
        _ = try b.softmaxCrossEntropy(logits, name: "loss")
        return (b.graph, logits)
    }

    static func parameters(_ graph: Graph, using rng: inout SeededGenerator) -> [String: [Double]] {
        var p: [String: [Double]] = [:]
        for q in graph.parameters {
            switch q.role {
            case .runningVar: p[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
            case .runningMean: p[q.name] = [Double](repeating: 0, count: q.shape.count)
            case .normWeight: p[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5)
            default: p[q.name] = randomDoubles(q.shape.count, using: &rng, in: -0.5...0.5)
            }
        }
        return p
    }

    @Test func graphSharesOneParameter() throws {
        let (graph, _) = try Self.graph()
        #expect(graph.sharesParameters)
        let uses = graph.parameterUses
        let conv = try #require(graph.parameterIndex("block.conv.weight"))
        #expect(uses[conv].map { graph.nodes[$0].name } == ["block.conv", "block.1.conv", "block.2.conv"])
        #expect(graph.parameters.filter { $0.name.hasPrefix("block.") }.count == 6, "one weight, bias and four norm tensors")
        // The rewrites that change one node's parameters refuse.
        #expect(throws: CLNetError.self) { _ = try graph.foldingBatchNorms() }
        #expect(throws: CLNetError.self) { _ = try graph.pruningPlan(fraction: 0.5, importance: [:]) }
        var b = GraphBuilder()
        let x = try b.input("input", shape: [1, 3, 4, 4])
        _ = try b.conv(x, Conv2D(inChannels: 3, outChannels: 3, kernel: 1), name: "c")
        let other = try b.input("other", shape: [1, 3, 5, 4])
        #expect(throws: CLNetError.self) { _ = try b.reapply("c", to: [other], name: "c2") }
        #expect(throws: CLNetError.self) { _ = try b.reapply("missing", to: [x], name: "c3") }
    }

    /// The reference's gradient of each shared parameter against central differences of the
    /// loss in Double: the sum over its three uses.
    @Test func referenceGradientIsTheSumOverUses() throws {
        var rng = freshGenerator("shared parameters finite differences")
        let (graph, _) = try Self.graph()
        let params = Self.parameters(graph, using: &rng)
        let x = randomDoubles(2 * 2 * 5 * 6, using: &rng), labels = [1, 3]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["input": x], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        let loss = graph.nodes[graph.lossNode!].output
        for name in ["block.conv.weight", "block.conv.bias", "block.bn.weight", "block.bn.bias", "stem.weight"] {
            let numeric = finiteDifference(at: params[name]!) { v in
                var p = params
                p[name] = v
                var r = try! ReferenceExecutor(graph: graph, parameters: p)
                return try! r.forward(["input": x], labels: labels, training: true)[loss.index][0]
            }
            let error = relativeError(grads.parameters[name]!, numeric)
            #expect(error <= 1e-6, "\(name): relative error \(error)")
        }
    }

    /// On the device, on one queue and on two: the gradients, the running statistics the shared
    /// norm updates three times, and one SGD step of each shared parameter from its summed
    /// gradient.
    @Test(arguments: [1, 2])
    func deviceMatchesReference(queues: Int) throws {
        var rng = freshGenerator("shared parameters device \(queues)")
        let (graph, logits) = try Self.graph()
        let params = Self.parameters(graph, using: &rng)
        let x = randomDoubles(2 * 2 * 5 * 6, using: &rng), labels = [1, 3]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["input": x], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-3)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true, keep: [logits], queues: queues,
                                    optimizer: sgd)
        for p in graph.parameters { try executor.setParameter(p.name, params[p.name]!.map(Float.init)) }
        try executor.forward(["input": x.map(Float.init)], labels: labels)
        try executor.backward()
        try executor.synchronize()
        #expect(relativeError(try executor.read(logits), values[logits.index]) <= 1e-5, "logits")
        for p in graph.parameters {
            if p.trainable {
                let error = relativeError(try executor.gradient(p.name), grads.parameters[p.name]!)
                #expect(error <= 1e-4, "\(p.name) gradient: relative error \(error)")
                let step = Reference.sgdStep(parameters: params[p.name]!, gradients: grads.parameters[p.name]!,
                                             momentumBuffer: [Double](repeating: 0, count: p.shape.count), learningRate: 0.1,
                                             momentum: 0.9, weightDecay: 1e-3, nesterov: false)
                let updated = relativeError(try executor.parameter(p.name), step.parameters)
                #expect(updated <= 1e-5, "\(p.name) after one step: relative error \(updated)")
            } else {
                let error = relativeError(try executor.parameter(p.name), reference.parameters[p.name]!)
                #expect(error <= 1e-5, "\(p.name): relative error \(error)")
            }
        }
    }
}
