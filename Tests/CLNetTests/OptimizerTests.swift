import CLNet
import Testing

@Suite("Optimizer: SGD")
struct OptimizerTests {
    @Test(arguments: [SGD(learningRate: 0.1), SGD(learningRate: 0.05, momentum: 0.9),
                      SGD(learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4),
                      SGD(learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4, nesterov: true),
                      // The prior's shrink (0.5 * 0.3) reaches the target for some parameters, not all.
                      SGD(learningRate: 0.5, momentum: 0.9, prior: 0.3, priorTarget: 0.25)])
    func sgdMatchesReferenceOverSteps(_ sgd: SGD) throws {
        // 9,001 floats are two tiles of the kernel's runs.
        for q in try Shared.queuesForEachLayout() { for n in [1037, 9001] {
            var rng = freshGenerator("sgd \(sgd) \(n)")
            var p = randomDoubles(n, using: &rng), buf = [Double](repeating: 0, count: n)
            // A slice of a larger arena: the update must touch only its range.
            let arena = try poisonedTensor(q, [n + 10])
            let pt = try Tensor(buffer: arena.buffer, shape: [n], offset: 5)
            try q.write(p.map(Float.init), to: pt)
            let bt = try deviceTensor(q, buf, [n])
            for step in 0..<3 {
                let g = randomDoubles(n, using: &rng)
                (p, buf) = Reference.sgdStep(parameters: p, gradients: g, momentumBuffer: buf, learningRate: Double(sgd.learningRate),
                                             momentum: Double(sgd.momentum), weightDecay: Double(sgd.weightDecay), nesterov: sgd.nesterov,
                                             prior: Double(sgd.prior), priorTarget: Double(sgd.priorTarget))
                try sgd.step(q, parameters: pt, gradients: try deviceTensor(q, g, [n]), momentumBuffer: bt)
                try expectClose(q, pt, p, forwardBound, "parameters after step \(step)")
                if sgd.momentum > 0 { try expectClose(q, bt, buf, forwardBound, "momentum after step \(step)") }
            }
            if sgd.prior > 0 {
                let reached = p.filter { $0 == Double(sgd.priorTarget) }.count
                #expect(reached > 0 && reached < n, "\(reached) of \(n) parameters at the prior's target")
                // float32 may land on the other side of the target's edge than Double, rarely.
                let onDevice = try q.read(pt).filter { $0 == sgd.priorTarget }.count
                #expect(abs(onDevice - reached) <= n / 1000, "\(onDevice) on the device, \(reached) in the reference")
            }
            let all: [Float] = try q.read(arena)
            #expect(all[..<5].allSatisfy(\.isNaN) && all[(n + 5)...].allSatisfy(\.isNaN), "SGD wrote outside its range")
        } }
    }

    /// The prior's proximal step keeps a NaN a NaN, in the vector path and in the tail.
    @Test func priorKeepsNaN() throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("sgd prior NaN")
            var p = randomDoubles(1037, using: &rng).map(Float.init), g = randomDoubles(1037, using: &rng).map(Float.init)
            p[3] = .nan
            g[1036] = .nan
            let pt = try deviceTensor(q, p.map(Double.init), [1037])
            try SGD(learningRate: 0.5, prior: 10, priorTarget: 1).step(q, parameters: pt, gradients: try deviceTensor(q, g.map(Double.init), [1037]),
                                                                        momentumBuffer: try deviceTensor(q, [Double](repeating: 0, count: 1037), [1037]))
            let out: [Float] = try q.read(pt)
            #expect(out[3].isNaN && out[1036].isNaN)
            #expect(out.enumerated().allSatisfy { $0.offset == 3 || $0.offset == 1036 || $0.element == 1 })
        }
    }

    @Test func nesterovNeedsMomentum() throws {
        let q = try Shared.context().makeQueue()
        let t = try poisonedTensor(q, [4])
        #expect(throws: CLNetError.self) {
            try SGD(learningRate: 0.1, nesterov: true).step(q, parameters: t, gradients: t, momentumBuffer: t)
        }
    }
}
