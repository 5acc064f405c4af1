import CLNet
import Foundation
import Testing

@Suite("Spiking: neurons through time, time steps and SEW connections against the reference and SpikingJelly")
struct SpikingTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var neuron: SpikingNeuron
        var testDescription: String { "\(shape) \(neuron)" }
    }

    static let cases: [Case] = [
        Case(shape: [4 * 2, 3, 5, 4], neuron: SpikingNeuron(steps: 4)),                                   // SEW's default
        Case(shape: [3 * 1, 5, 3, 7], neuron: SpikingNeuron(steps: 3, detachReset: false)),              // batch 1
        Case(shape: [4 * 3, 2, 6, 5], neuron: SpikingNeuron(steps: 4, dynamics: .leaky(tau: 2), surrogate: .sigmoid(alpha: 4),
                                                             detachReset: false)),
        Case(shape: [5 * 2, 7, 1, 3], neuron: SpikingNeuron(steps: 5, dynamics: .leaky(tau: 1.5), hardReset: false,
                                                             surrogate: .sigmoid(alpha: 4))),            // soft reset
        Case(shape: [1 * 3, 4, 3, 3], neuron: SpikingNeuron(steps: 1, threshold: 0.5)),                    // one step
        Case(shape: [2 * 2, 9], neuron: SpikingNeuron(steps: 2, hardReset: false, surrogate: .atan(alpha: 3))), // [T*N, C]
    ]

    /// Inputs of about the threshold's size, kept 1e-3 away from it at every step, where float32
    /// could fire where Double does not.
    static func input(_ t: Case, using rng: inout SeededGenerator) -> [Double] {
        var x = randomDoubles(t.shape.count, using: &rng, in: -1...2)
        for _ in 0..<20 {
            let h = Reference.spikingPotentials(x, shape: t.shape, neuron: t.neuron)
            let near = h.indices.filter { abs(h[$0] - Double(t.neuron.threshold)) < 1e-3 }
            if near.isEmpty { break }
            for i in near { x[i] = Double(Float(x[i] + 0.01)) }
        }
        return x
    }

    @Test(arguments: cases)
    func neuronMatchesReference(_ t: Case) throws {
        var rng = freshGenerator("spiking \(t.testDescription)")
        let x = Self.input(t, using: &rng), dy = randomDoubles(t.shape.count, using: &rng)
        let y = Reference.spikingNeuron(x, shape: t.shape, neuron: t.neuron)
        let dx = Reference.spikingNeuronBackward(x, shape: t.shape, neuron: t.neuron, dy: dy)
        #expect(y.contains(1) && y.contains(0), "some neurons fire and some do not")
        for q in try Shared.queuesForEachLayout() {
            let xt = try deviceTensor(q, x, t.shape, strided: true), yt = try poisonedTensor(q, t.shape, strided: true)
            try t.neuron.forward(q, x: xt, y: yt)
            try expectClose(q, yt, y, 0, "spikes")
            let dyt = try deviceTensor(q, dy, t.shape, strided: true), dxt = try poisonedTensor(q, t.shape, strided: true)
            try t.neuron.backward(q, x: xt, dy: dyt, dx: dxt)
            try expectClose(q, dxt, dx, backwardBound, "dx")
            let prior = randomDoubles(t.shape.count, using: &rng), acc = try deviceTensor(q, prior, t.shape)
            try t.neuron.backward(q, x: xt, dy: dyt, dx: acc, accumulate: true)
            try expectClose(q, acc, zip(prior, dx).map(+), backwardBound, "accumulated dx")
        }
    }

    /// `Fixtures/make_spiking_fixture.py`'s cases, in order: x [T, 2, 3, 5, 4].
    static let fixtureCases: [SpikingNeuron] = [
        SpikingNeuron(steps: 4),
        SpikingNeuron(steps: 3, detachReset: false),
        SpikingNeuron(steps: 4, dynamics: .leaky(tau: 2), surrogate: .sigmoid(alpha: 4), detachReset: false),
        SpikingNeuron(steps: 5, dynamics: .leaky(tau: 1.5), hardReset: false, surrogate: .sigmoid(alpha: 4)),
        SpikingNeuron(steps: 2, hardReset: false, surrogate: .sigmoid(alpha: 3), detachReset: false),
    ]

    /// SpikingJelly's neurons in float64 (the fixture): the reference to rounding, the device's
    /// spikes exactly and its gradients within 1e-4.
    @Test(arguments: Array(fixtureCases.indices))
    func matchesSpikingJelly(_ i: Int) throws {
        let neuron = Self.fixtureCases[i], shape: Shape = [neuron.steps * 2, 3, 5, 4]
        let file = try SafeTensors(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/spiking.safetensors"))
        func load(_ name: String) throws -> [Double] { try file.floats("case\(i).\(name)").map(Double.init) }
        let x = try load("x"), r = try load("r"), y = try load("y"), dx = try load("dx")
        try #require(x.count == shape.count)
        #expect(Reference.spikingNeuron(x, shape: shape, neuron: neuron) == y, "reference spikes")
        #expect(relativeError(Reference.spikingNeuronBackward(x, shape: shape, neuron: neuron, dy: r), dx) <= 1e-6, "reference dx")
        let q = try Shared.context().makeQueue()
        let xt = try deviceTensor(q, x, shape), yt = try poisonedTensor(q, shape), dxt = try poisonedTensor(q, shape)
        try neuron.forward(q, x: xt, y: yt)
        try expectClose(q, yt, y, 0, "spikes")
        try neuron.backward(q, x: xt, dy: try deviceTensor(q, r, shape), dx: dxt)
        try expectClose(q, dxt, dx, 1e-4, "dx")
    }

    /// The repetition over time steps, the mean over them, and their gradients, each the other's
    /// adjoint; the reference's against finite differences.
    @Test(arguments: [([2, 3, 4, 5] as Shape, 3), ([1, 7] as Shape, 4), ([3, 2, 1, 9] as Shape, 1)])
    func timeStepsMatchReference(_ small: Shape, _ steps: Int) throws {
        var rng = freshGenerator("time steps \(small) \(steps)")
        let big = try TimeSteps.repeatedShape(small, steps: steps)
        let x = randomDoubles(small.count, using: &rng), z = randomDoubles(big.count, using: &rng)
        let r = randomDoubles(big.count, using: &rng), s = randomDoubles(small.count, using: &rng)
        #expect(relativeError(Reference.timeMean(r, steps: steps, scale: 1),
                              finiteDifference(at: x) { dot(Reference.timeRepeat($0, steps: steps), r) }) <= 1e-8)
        #expect(relativeError(Reference.timeRepeat(s, steps: steps).map { $0 / Double(steps) },
                              finiteDifference(at: z) { dot(Reference.timeMean($0, steps: steps), s) }) <= 1e-8)
        for q in try Shared.queuesForEachLayout() {
            let xt = try deviceTensor(q, x, small, strided: true), yt = try poisonedTensor(q, big, strided: true)
            try TimeSteps.broadcast(q, small: xt, big: yt, steps: steps)
            try expectClose(q, yt, Reference.timeRepeat(x, steps: steps), 0, "repeat")
            let zt = try deviceTensor(q, z, big, strided: true), mt = try poisonedTensor(q, small, strided: true)
            try TimeSteps.sum(q, big: zt, small: mt, steps: steps, scale: 1 / Float(steps))
            try expectClose(q, mt, Reference.timeMean(z, steps: steps), forwardBound, "mean")
            let prior = randomDoubles(small.count, using: &rng), acc = try deviceTensor(q, prior, small)
            try TimeSteps.sum(q, big: zt, small: acc, steps: steps, accumulate: true)
            try expectClose(q, acc, zip(prior, Reference.timeMean(z, steps: steps, scale: 1)).map(+), forwardBound, "accumulated sum")
        }
        #expect(throws: CLNetError.self) { try TimeSteps.meanShape([5, 2], steps: 2) }
    }

    /// ADD, AND and IAND forward and backward against the reference, whose gradients match
    /// finite differences.
    @Test(arguments: SEWConnect.allCases)
    func sewConnectMatchesReference(_ connect: SEWConnect) throws {
        var rng = freshGenerator("sew \(connect)")
        let shape: Shape = [3, 4, 5, 3]
        // Spikes and sums of spikes, as in a SEW ResNet (the gradients hold for any values).
        let a = (0..<shape.count).map { _ in Double(Int.random(in: 0...2, using: &rng)) }
        let b = (0..<shape.count).map { _ in Double(Int.random(in: 0...1, using: &rng)) }
        let dy = randomDoubles(shape.count, using: &rng)
        let g = Reference.sewConnectBackward(a, b, connect, dy: dy)
        #expect(relativeError(g.dshortcut, finiteDifference(at: a) { dot(Reference.sewConnect($0, b, connect), dy) }) <= 1e-8)
        #expect(relativeError(g.dbranch, finiteDifference(at: b) { dot(Reference.sewConnect(a, $0, connect), dy) }) <= 1e-8)
        let q = try Shared.context().makeQueue()
        let at = try deviceTensor(q, a, shape, strided: true), bt = try deviceTensor(q, b, shape, strided: true)
        let yt = try poisonedTensor(q, shape, strided: true)
        try connect.forward(q, shortcut: at, branch: bt, y: yt)
        try expectClose(q, yt, Reference.sewConnect(a, b, connect), 0, "forward")
        let dyt = try deviceTensor(q, dy, shape, strided: true)
        let da = try poisonedTensor(q, shape, strided: true), db = try poisonedTensor(q, shape, strided: true)
        try connect.backward(q, shortcut: at, branch: bt, dy: dyt, dshortcut: da, dbranch: db)
        try expectClose(q, da, g.dshortcut, 0, "dshortcut")
        try expectClose(q, db, g.dbranch, 0, "dbranch")
        let prior = randomDoubles(shape.count, using: &rng), acc = try deviceTensor(q, prior, shape)
        try connect.backward(q, shortcut: at, branch: bt, dy: dyt, dshortcut: nil, dbranch: acc, accumulateBranch: true)
        try expectClose(q, acc, zip(prior, g.dbranch).map(+), forwardBound, "accumulated dbranch")
    }

    /// Bad settings and shapes are refused, naming the layer.
    @Test func refusesBadInput() throws {
        #expect(throws: CLNetError.self) { try SpikingNeuron(steps: 0).check([4, 3]) }
        #expect(throws: CLNetError.self) { try SpikingNeuron(steps: 65).check([65, 3]) }
        #expect(throws: CLNetError.self) { try SpikingNeuron(steps: 4, dynamics: .leaky(tau: 1)).check([4, 3]) }
        var b = GraphBuilder()
        let x = try b.input("input", shape: [6, 3, 4, 4])
        let error = #expect(throws: CLNetError.self) { try b.spikingNeuron(x, SpikingNeuron(steps: 4), name: "layer1.0.sn1") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("layer1.0.sn1"))
        for (spec, message) in [("sew_resnet18:connect=or", "connect=or"), ("sew_resnet18:T=0", "T=0"),
                                ("sew_resnet18:norm=group:4", "norm=batch only"), ("sew_resnet18:tau=2", "tau")] {
            let error = #expect(throws: CLNetError.self, "\(spec)") { try ModelSpec.graph(spec, batch: 1, size: 32) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(spec): \(error.map { "\($0)" } ?? "")")
        }
        // A spiking network has no ONNX form here; export says so instead of writing a wrong one.
        let (graph, logits) = try ModelSpec.graph("sew_resnet18:layers=1.1,T=2,classes=3", batch: 1, size: 32, loss: false)
        let values = Dictionary(uniqueKeysWithValues: graph.parameters.map { ($0.name, [Float](repeating: 0.1, count: $0.shape.count)) })
        #expect(throws: CLNetError.self) { try ONNX.model(graph: graph, logits: logits, parameters: values) }
    }
}
