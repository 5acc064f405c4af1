@testable import CLNet
import Foundation
import Testing

@Suite("Data-dependent initialisation: AutoInit and GradInit")
struct DataDependentInitTests {
    /// A norm-free chain of 3x3 convolutions of 32 channels and ReLUs.
    static func chain(depth: Int) throws -> (Graph, Value) {
        var b = GraphBuilder()
        var y = try b.input("input", shape: [2, 3, 24, 24])
        var channels = 3
        for i in 0..<depth {
            y = try b.conv(y, Conv2D(inChannels: channels, outChannels: 32, kernel: 3, padding: 1), name: "conv\(i)")
            if i < depth - 1 { y = try b.relu(y, name: "relu\(i)") }
            channels = 32
        }
        return (b.graph, y)
    }

    /// The carried moments are those of the functions: ReLU and the maximum of a pooling
    /// window against sampling, the sigmoid against its Gaussian integral.
    @Test func momentsMatchSampling() throws {
        var rng = SeededGenerator(seed: 3)
        let (m, s) = (0.4, 1.7), samples = (0..<400_000).map { _ in m + s * rng.normal() }
        func moments(_ v: [Double]) -> (Double, Double) {
            (v.reduce(0, +) / Double(v.count), v.reduce(0) { $0 + $1 * $1 } / Double(v.count))
        }
        let x = AutoInit.Moments(mean: m, square: m * m + s * s)
        let relu = AutoInit.relu(x), sampled = moments(samples.map { max($0, 0) })
        #expect(abs(relu.mean - sampled.0) < 0.01 && abs(relu.square - sampled.1) < 0.02, "\(relu) \(sampled)")
        let windows = stride(from: 0, to: samples.count - 9, by: 9).map { samples[$0..<$0 + 9].max()! }
        let max9 = AutoInit.maximum(of: 9, x), sampledMax = moments(windows)
        #expect(abs(max9.mean - sampledMax.0) < 0.02 && abs(max9.square - sampledMax.1) < 0.1, "\(max9) \(sampledMax)")
        let sigmoid = AutoInit.gaussian(x) { 1 / (1 + exp(-$0)) }, sampledSigmoid = moments(samples.map { 1 / (1 + exp(-$0)) })
        #expect(abs(sigmoid.mean - sampledSigmoid.0) < 0.005 && abs(sigmoid.square - sampledSigmoid.1) < 0.005)
    }

    /// After AutoInit a deep norm-free chain passes unit-variance signals: its output's
    /// variance is near 1 where the 3x-too-large draw grew it by orders of magnitude. (Each
    /// layer's variance is 1 in expectation over the draw; the product of twelve draws' factors
    /// stays near 1 when each layer has 32 channels, at 8 its median fell to about 0.55. The
    /// padding's share is counted on average, which at 8x8 overshot by 7% a layer: its border
    /// pixels, of lower variance, are also read by fewer taps; at 24x24 that is small.)
    @Test func autoInitKeepsTheSignalsScale() throws {
        let (graph, output) = try Self.chain(depth: 12)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: false, keep: [output])
        try executor.initialize(seed: 1)
        for p in graph.parameters where p.role == .weight { try executor.setParameter(p.name, try executor.parameter(p.name).map { $0 * 3 }) }
        var rng = freshGenerator("autoinit chain")
        let x = randomDoubles(graph.shape(of: graph.inputs[0].value).count, using: &rng, in: -2...2).map(Float.init)
        func variance() throws -> Double {
            try executor.forward(["input": x])
            return AutoInit.Moments(of: try executor.read(output)).variance
        }
        let before = try variance()
        try executor.autoInitialize(sample: x, seed: 2)
        let after = try variance()
        #expect(before > 1e4, "\(before)")
        print("AutoInit chain: output variance \(before) before, \(after) after")
        #expect(after > 0.5 && after < 2, "output variance \(after) after AutoInit (\(before) before)")
    }

    /// AutoInit carries moments through every operation of every family (it may not throw),
    /// draws every weighted layer but those the model fixes to a constant, and leaves the
    /// other parameters alone.
    @Test(arguments: ["cifar_resnet:depth=8,channels=1,norm=none,fixup=0", "cifar_resnet:depth=8,channels=1,norm=none",
                      "resnet:block=bottleneck,layers=1.1,groups=4,width=4,stem=cifar,se=4,act=prelu,deform=2,classes=5",
                      "resnet:block=basic,layers=1.1,stem=cifar,dendritic=1,dcls=2,dendritic_fc=1,classes=5",
                      "densenet:growth=4,blocks=2.2,init=8,bn_size=2,classes=5",
                      "resnet:block=bottleneck,layers=1.1,groups=4,width=4,sk=4,stem=cifar,classes=5",
                      "sew_resnet:block=basic,layers=1.1,stem=cifar,T=2,connect=iand,classes=5",
                      "wrn:depth=10,widen=2,dropout=0.3,classes=5"])
    func autoInitCoversEveryFamily(spec: String) throws {
        let graph = try ModelSpec.graph(spec, batch: 2, size: 8).graph
        var values: [String: [Float]] = [:]
        var rng = SeededGenerator(seed: 5)
        for p in graph.parameters {
            values[p.name] = (0..<p.shape.count).map { _ in p.role == .runningVar || p.role == .normWeight ? 1 : Float(rng.normal() * 0.1) }
        }
        let drawn = try AutoInit.weights(for: graph, values: values, input: AutoInit.Moments(mean: 0.2, square: 1.1), seed: 9)
        let weighted = graph.parameters.filter { $0.role == .weight && $0.initialization != .constant(0) }.map(\.name)
        #expect(Set(drawn.keys) == Set(weighted), "\(Set(weighted).subtracting(drawn.keys))")
        #expect(drawn.values.allSatisfy { $0.allSatisfy(\.isFinite) && $0.contains { $0 != 0 } })
    }

    /// A small network and two batches. `smooth`: sigmoids instead of ReLUs, so that central
    /// differences see no kinks.
    static func tinyProbe(smooth: Bool = false) throws -> (Executor, Batch, Batch) {
        let graph: Graph
        if smooth {
            var b = GraphBuilder()
            var y = try b.input("input", shape: [4, 1, 8, 8])
            y = try b.sigmoid(try b.conv(y, Conv2D(inChannels: 1, outChannels: 6, kernel: 3, padding: 1), bias: true, name: "c1"), name: "s1")
            y = try b.sigmoid(try b.conv(y, Conv2D(inChannels: 6, outChannels: 6, kernel: 3, stride: 2, padding: 1), name: "c2"), name: "s2")
            y = try b.linear(try b.globalAvgPool(y, name: "pool"), outFeatures: 4, name: "fc")
            _ = try b.softmaxCrossEntropy(y, name: "loss")
            graph = b.graph
        } else {
            graph = try ModelSpec.graph("cifar_resnet:depth=8,channels=1,norm=none,fixup=0,classes=4", batch: 4, size: 8).graph
        }
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true, queues: 1)
        try executor.initialize(seed: 4)
        var rng = freshGenerator("gradinit probe")
        func batch() -> Batch {
            Batch(inputs: randomDoubles(4 * 64, using: &rng).map(Float.init), labels: (0..<4).map { _ in Int.random(in: 0..<4, using: &rng) },
                  count: 4)
        }
        return (executor, batch(), batch())
    }

    /// GradInit's gradient with respect to the scales, through the gradient's own dependence on
    /// them (Hessian-vector products by central differences), against central differences of
    /// the objective itself in the scales: L(S', θ(α) - η g(θ(α), S)), on a network without
    /// kinks (where ReLUs cross theirs, both differences blur: 6-11% apart on a CIFAR ResNet).
    @Test func gradInitGradientMatchesDifferences() throws {
        let (executor, s, next) = try Self.tinyProbe(smooth: true)
        var gradInit = GradInit()
        gradInit.gradientBound = .infinity
        let probe = try GradInit.Probe(executor)
        var rng = freshGenerator("gradinit scales")
        let alpha = probe.names.map { _ in 0.7 + 0.6 * rng.uniform() }
        let got = try gradInit.objectiveGradient(probe, alpha: alpha, batch: s, next: { next }, seed: 1)
        func objective(_ a: [Double]) throws -> Double {
            let theta = probe.scaled(a), g = try probe.gradient(at: theta, s, seed: 1).g
            let stepped = zip(theta, g).map { th, gr in zip(th, gr).map { $0 - Float(gradInit.learningRate) * $1 } }
            return try probe.gradient(at: stepped, next, seed: 1 &+ 1_000_003).loss
        }
        var want: [Double] = []
        for i in alpha.indices {
            var up = alpha, down = alpha
            up[i] += 1e-2
            down[i] -= 1e-2
            want.append((try objective(up) - objective(down)) / 2e-2)
        }
        #expect(got.lossAfterStep != nil)
        let error = relativeError(got.gradient, want)
        #expect(error <= 1e-2, "\(got.gradient) against \(want)")
        print("GradInit gradient against differences: relative error \(error) over \(want.count) tensors")
    }

    /// The two objectives do what they say: scales learned against the loss after a step lower
    /// it (on fixed batches), and against the gradient's norm lower the norm.
    @Test func gradInitLowersItsObjectives() throws {
        let (executor, s, next) = try Self.tinyProbe()
        let initial = try executor.graph.parameters.map { p throws in try executor.parameter(p.name) }
        var gradInit = GradInit()
        gradInit.steps = 15
        gradInit.scaleRate = 0.05
        gradInit.gradientBound = .infinity
        let loss = try gradInit.run(executor) { i in i % 2 == 0 ? s : next }
        #expect(loss.normSteps == 0 && loss.lastLoss! < loss.firstLoss!, "\(loss.firstLoss!) -> \(loss.lastLoss!)")
        #expect(loss.scales.values.contains { $0 != 1 })

        for (p, v) in zip(executor.graph.parameters, initial) { try executor.setParameter(p.name, v) }
        let probe = try GradInit.Probe(executor)
        let before = GradInit.Probe.norm(try probe.gradient(at: probe.initial, s, seed: 0).g)
        gradInit.gradientBound = 0
        let norm = try gradInit.run(executor) { _ in s }
        let after = GradInit.Probe.norm(try probe.gradient(at: probe.scaled(probe.names.map { norm.scales[$0]! }), s, seed: 0).g)
        #expect(norm.normSteps == 15 && after < before, "gradient norm \(before) -> \(after)")
    }

    /// `clnet train --init` through the trainer: both run on a norm-free ResNet and leave finite
    /// weights that train; with --weights, or a bad step count, they refuse.
    @Test func trainerRunsBoth() throws {
        let train = try TrainerTests.data(64, seed: 41)
        let context = try Shared.context()
        for method in [InitializationMethod.autoinit, .gradinit] {
            var config = TrainerTests.config("cifar_resnet:depth=8,norm=none,fixup=0")
            config.epochs = 1
            config.initialization = method
            config.gradInitSteps = 3
            let trainer = try Trainer(configuration: config, train: train, test: nil, context: context)
            #expect(trainer.initializationReport?.contains(method == .autoinit ? "AutoInit" : "GradInit") == true)
            let losses = try trainer.trainEpoch().stepLosses
            #expect(losses.allSatisfy { $0.isFinite }, "\(method): \(losses)")
            var both = config
            both.initialWeights = "/nonexistent.safetensors"
            let e = #expect(throws: CLNetError.self) { try Trainer(configuration: both, train: train, test: nil, context: context) }
            #expect("\(e!)".contains("choose one") || "\(e!)".contains("nonexistent"), "\(e!)")
        }
        var zero = TrainerTests.config("cifar_resnet:depth=8,norm=none,fixup=0")
        zero.initialization = .gradinit
        zero.gradInitSteps = 0
        #expect(throws: CLNetError.self) { try Trainer(configuration: zero, train: train, test: nil, context: context) }
    }
}
