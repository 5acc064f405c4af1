import CLNet
import Testing

@Suite("Norm: batch norm, group norm, fused ReLU")
struct NormTests {
    // Not two values per channel: there the input gradient is exactly zero up to eps, and a
    // relative error against zero measures only rounding.
    static let shapes: [Shape] = [[1, 3, 5, 7], [3, 6, 1, 1], [3, 5, 9, 11], [4, 17, 4, 3], [8, 32, 7, 7],
                                  // Split reductions: parts of 3 whole rows, then 2 slices of each row
                                  // (and 2 tiles of each row in the element-wise passes).
                                  [5, 3, 48, 41], [2, 3, 90, 100]]

    @Test(arguments: shapes, [false, true])
    func batchNormTraining(shape: Shape, relu: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("batchNorm \(shape) relu \(relu)")
            try checkTraining(q, shape, relu: relu, known: nil, using: &rng)
        }
    }

    struct KnownCase: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var known: Int
        var testDescription: String { "\(shape) known \(known)" }
    }

    /// A norm over the first `known` channels runs first; the norm over all of them then takes
    /// those channels' statistics from its workspace (a DenseNet layer after the one before it).
    /// Everything must come out as if it had measured them itself: y, the running statistics,
    /// and the workspace its backward reads.
    @Test(arguments: [
        KnownCase(shape: [1, 3, 5, 7], known: 1), KnownCase(shape: [3, 17, 5, 7], known: 9),
        KnownCase(shape: [3, 17, 5, 7], known: 17), KnownCase(shape: [5, 12, 48, 41], known: 7),
        KnownCase(shape: [2, 5, 90, 100], known: 2),
    ], [false, true])
    func batchNormWithKnownStatistics(_ t: KnownCase, relu: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("batchNorm known \(t.testDescription) relu \(relu)")
            try checkTraining(q, t.shape, relu: relu, known: t.known, using: &rng)
        }
    }

    /// A training forward and its backward against the reference: y, the running statistics, dx,
    /// dgamma and dbeta, then dx alone accumulated. With `known`, an earlier norm (with parameters
    /// of its own) first measures the first `known` channels, and this one takes their statistics.
    private func checkTraining(_ q: CommandQueue, _ shape: Shape, relu: Bool, known: Int?,
                               using rng: inout SeededGenerator) throws {
        let c = shape.c
        var x = randomDoubles(shape.count, using: &rng, in: -2...3)
        let dy = randomDoubles(shape.count, using: &rng)
        let gamma = randomDoubles(c, using: &rng, in: 0.5...1.5), beta = randomDoubles(c, using: &rng)
        let rm = randomDoubles(c, using: &rng), rv = randomDoubles(c, using: &rng, in: 0.5...2)
        if relu {
            x = try awayFromKink(x) { Reference.batchNormTraining($0, shape: shape, gamma: gamma, beta: beta, runningMean: rm,
                                                                runningVar: rv).y }
        }
        let want = Reference.batchNormTraining(x, shape: shape, gamma: gamma, beta: beta, runningMean: rm,
                                               runningVar: rv, relu: relu)
        let grads = Reference.normBackward(x, shape: shape, gamma: gamma, beta: beta, groups: 0, dy: dy, relu: relu)
        let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape, strided: relu)
        let gt = try deviceTensor(q, gamma, [c]), bt = try deviceTensor(q, beta, [c])
        let rmt = try deviceTensor(q, rm, [c]), rvt = try deviceTensor(q, rv, [c])
        let ws = try poisonedTensor(q, [BatchNorm.workspaceCount(shape)])
        var earlier: KnownStatistics? = nil
        if let known {
            let prefix: Shape = [shape.n, known, shape.h, shape.w]
            let first = try poisonedTensor(q, [BatchNorm.workspaceCount(prefix)])
            func filled(_ v: Double) throws -> Tensor { try deviceTensor(q, [Double](repeating: v, count: known), [known]) }
            try BatchNorm.forwardTraining(q, x: try xt.slice(channels: 0..<known), gamma: try filled(1), beta: try filled(0),
                                          runningMean: try filled(0), runningVar: try filled(1),
                                          y: try poisonedTensor(q, prefix), workspace: first)
            earlier = KnownStatistics(workspace: first, channels: known)
        }
        try BatchNorm.forwardTraining(q, x: xt, gamma: gt, beta: bt, runningMean: rmt, runningVar: rvt, y: yt,
                                      workspace: ws, relu: relu, known: earlier)
        try expectClose(q, yt, want.y, forwardBound, "y")
        try expectClose(q, rmt, want.runningMean, forwardBound, "running mean")
        try expectClose(q, rvt, want.runningVar, forwardBound, "running variance")

        let dyt = try deviceTensor(q, dy, shape)
        let dxt = try poisonedTensor(q, shape, strided: true)
        let dgt = try poisonedTensor(q, [c]), dbt = try poisonedTensor(q, [c])
        try BatchNorm.backward(q, x: xt, gamma: gt, beta: bt, workspace: ws, dy: dyt, dx: dxt, dgamma: dgt,
                               dbeta: dbt, relu: relu)
        try expectClose(q, dxt, grads.dx, backwardBound, "dx")
        try expectClose(q, dgt, grads.dgamma, backwardBound, "dgamma")
        try expectClose(q, dbt, grads.dbeta, backwardBound, "dbeta")

        // Input gradient alone, accumulated into what is there.
        let prior = randomDoubles(shape.count, using: &rng)
        let acc = try deviceTensor(q, prior, shape)
        try BatchNorm.backward(q, x: xt, gamma: gt, beta: bt, workspace: ws, dy: dyt, dx: acc, dgamma: nil,
                               dbeta: nil, relu: relu, accumulate: true)
        try expectClose(q, acc, zip(prior, grads.dx).map(+), backwardBound, "accumulated dx")
    }

    @Test func knownStatisticsAreChecked() throws {
        let q = try Shared.context().makeQueue()
        let shape: Shape = [2, 4, 3, 3]
        var rng = freshGenerator("batchNorm known refused")
        let x = try deviceTensor(q, randomDoubles(shape.count, using: &rng), shape)
        let v = try deviceTensor(q, [1, 1, 1, 1], [4]), y = try poisonedTensor(q, shape)
        let ws = try poisonedTensor(q, [BatchNorm.workspaceCount(shape)])
        for (channels, workspace) in [(5, ws), (0, ws), (4, try poisonedTensor(q, [11]))] {
            #expect(throws: CLNetError.self) {
                try BatchNorm.forwardTraining(q, x: x, gamma: v, beta: v, runningMean: v, runningVar: v, y: y, workspace: ws,
                                              known: KnownStatistics(workspace: workspace, channels: channels))
            }
        }
    }

    @Test(arguments: shapes)
    func batchNormInference(shape: Shape) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("batchNorm inference \(shape)")
            let c = shape.c
            let x = randomDoubles(shape.count, using: &rng)
            let gamma = randomDoubles(c, using: &rng), beta = randomDoubles(c, using: &rng)
            let rm = randomDoubles(c, using: &rng), rv = randomDoubles(c, using: &rng, in: 0.1...2)
            let uncut = Reference.batchNormInference(x, shape: shape, gamma: gamma, beta: beta, runningMean: rm,
                                                     runningVar: rv)
            for relu in [false, true] {
                let want = Reference.batchNormInference(x, shape: shape, gamma: gamma, beta: beta, runningMean: rm,
                                                        runningVar: rv, relu: relu)
                // Random running statistics can cut nearly every output (one draw kept 189 of 54000,
                // each a small difference of terms near 1), so the float rounding of the terms is
                // measured against the output before the cut.
                let bound = forwardBound * max(1, norm(uncut) / max(norm(want), .leastNormalMagnitude))
                let xt = try deviceTensor(q, x, shape), yt = try poisonedTensor(q, shape, strided: true)
                try BatchNorm.forwardInference(q, x: xt, gamma: try deviceTensor(q, gamma, [c]),
                                               beta: try deviceTensor(q, beta, [c]), runningMean: try deviceTensor(q, rm, [c]),
                                               runningVar: try deviceTensor(q, rv, [c]), y: yt, relu: relu)
                try expectClose(q, yt, want, bound, "inference relu \(relu)")
            }
        }
    }

    struct GroupCase: Sendable, CustomTestStringConvertible {
        var shape: Shape
        var groups: Int
        var testDescription: String { "\(shape) groups \(groups)" }
    }

    @Test(arguments: [
        GroupCase(shape: [1, 6, 5, 7], groups: 1), GroupCase(shape: [2, 6, 3, 3], groups: 2),
        GroupCase(shape: [3, 5, 4, 3], groups: 5), GroupCase(shape: [2, 64, 3, 3], groups: 32),
        GroupCase(shape: [1, 12, 1, 1], groups: 3), GroupCase(shape: [2, 4, 64, 65], groups: 2),
        GroupCase(shape: [1, 4, 90, 100], groups: 2),  // parameter sums in 2 slices of each row
    ], [false, true])
    func groupNorm(_ t: GroupCase, relu: Bool) throws {
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("groupNorm \(t.testDescription)")
            let shape = t.shape, c = shape.c
            var x = randomDoubles(shape.count, using: &rng, in: -1...2), dy = randomDoubles(shape.count, using: &rng)
            let gamma = randomDoubles(c, using: &rng, in: 0.5...1.5), beta = randomDoubles(c, using: &rng)
            if relu { x = try awayFromKink(x) { Reference.groupNorm($0, shape: shape, gamma: gamma, beta: beta, groups: t.groups) } }
            let y = Reference.groupNorm(x, shape: shape, gamma: gamma, beta: beta, groups: t.groups, relu: relu)
            let grads = Reference.normBackward(x, shape: shape, gamma: gamma, beta: beta, groups: t.groups, dy: dy, relu: relu)
            let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape)
            let gt = try deviceTensor(q, gamma, [c]), bt = try deviceTensor(q, beta, [c])
            let ws = try poisonedTensor(q, [GroupNorm.workspaceCount(shape, groups: t.groups)])
            try GroupNorm.forward(q, x: xt, gamma: gt, beta: bt, groups: t.groups, y: yt, workspace: ws, relu: relu)
            try expectClose(q, yt, y, forwardBound, "y")
            let dyt = try deviceTensor(q, dy, shape, strided: true), dxt = try poisonedTensor(q, shape)
            let dgt = try poisonedTensor(q, [c]), dbt = try poisonedTensor(q, [c])
            try GroupNorm.backward(q, x: xt, gamma: gt, beta: bt, groups: t.groups, workspace: ws, dy: dyt, dx: dxt,
                                   dgamma: dgt, dbeta: dbt, relu: relu)
            try expectClose(q, dxt, grads.dx, backwardBound, "dx")
            try expectClose(q, dgt, grads.dgamma, backwardBound, "dgamma")
            try expectClose(q, dbt, grads.dbeta, backwardBound, "dbeta")
        }
    }

    /// The node after the norm whose backward the norm's takes over (`NormConsumer`).
    enum Consumer: String, CaseIterable, Sendable { case relu, addReLU, add }

    /// The norm's backward started from a consumer's output gradient: masked by the consumer's
    /// ReLU, written to the addition's other input on the way, with the norm's own ReLU on top
    /// or not, batch and group norm, dx written and accumulated.
    @Test(arguments: [GroupCase(shape: [1, 3, 5, 7], groups: 0), GroupCase(shape: [3, 5, 9, 11], groups: 0),
                      GroupCase(shape: [4, 17, 4, 3], groups: 0), GroupCase(shape: [2, 3, 90, 100], groups: 0),
                      GroupCase(shape: [1, 6, 5, 7], groups: 2), GroupCase(shape: [2, 4, 64, 65], groups: 2),
                      GroupCase(shape: [3, 5, 4, 3], groups: 5)], Consumer.allCases)
    func backwardWithConsumer(_ c: GroupCase, consumer: Consumer) throws {
        let shape = c.shape, groups = c.groups
        for q in try Shared.queuesForEachLayout() {
            var rng = freshGenerator("norm consumer \(shape) \(groups) \(consumer)")
            for relu in [false, true] {
                var x = randomDoubles(shape.count, using: &rng, in: -2...3)
                let dy = randomDoubles(shape.count, using: &rng), out = randomDoubles(shape.count, using: &rng)
                let gamma = randomDoubles(shape.c, using: &rng, in: 0.5...1.5), beta = randomDoubles(shape.c, using: &rng)
                let pre: ([Double]) -> [Double] = { x in
                    groups == 0 ? Reference.batchNormTraining(x, shape: shape, gamma: gamma, beta: beta,
                                                              runningMean: gamma, runningVar: gamma).y
                        : Reference.groupNorm(x, shape: shape, gamma: gamma, beta: beta, groups: groups)
                }
                if relu { x = try awayFromKink(x, pre) }
                let g = consumer == .add ? dy : Reference.reluBackward(y: out, dy: dy)
                let grads = Reference.normBackward(x, shape: shape, gamma: gamma, beta: beta, groups: groups, dy: g, relu: relu)

                let xt = try deviceTensor(q, x, shape, strided: true), yt = try poisonedTensor(q, shape)
                let gt = try deviceTensor(q, gamma, [shape.c]), bt = try deviceTensor(q, beta, [shape.c])
                let ws = try poisonedTensor(q, [groups == 0 ? BatchNorm.workspaceCount(shape)
                                                    : GroupNorm.workspaceCount(shape, groups: groups)])
                if groups == 0 {
                    let rm = try deviceTensor(q, gamma, [shape.c]), rv = try deviceTensor(q, gamma, [shape.c])
                    try BatchNorm.forwardTraining(q, x: xt, gamma: gt, beta: bt, runningMean: rm, runningVar: rv, y: yt,
                                                  workspace: ws, relu: relu)
                } else {
                    try GroupNorm.forward(q, x: xt, gamma: gt, beta: bt, groups: groups, y: yt, workspace: ws, relu: relu)
                }
                let dyt = try deviceTensor(q, dy, shape, strided: true), outt = try deviceTensor(q, out, shape)
                let shortcut = consumer == .relu ? nil : try poisonedTensor(q, shape, strided: true)
                let source = NormConsumer(mask: consumer == .add ? nil : outt, shortcut: shortcut)
                let dxt = try poisonedTensor(q, shape), dgt = try poisonedTensor(q, [shape.c]), dbt = try poisonedTensor(q, [shape.c])
                let prior = randomDoubles(shape.count, using: &rng), acc = try deviceTensor(q, prior, shape)
                for (dx, params, accumulate) in [(dxt, true, false), (acc, false, true)] {
                    if groups == 0 {
                        try BatchNorm.backward(q, x: xt, gamma: gt, beta: bt, workspace: ws, dy: dyt, dx: dx,
                                               dgamma: params ? dgt : nil, dbeta: params ? dbt : nil, relu: relu,
                                               consumer: source, accumulate: accumulate)
                    } else {
                        try GroupNorm.backward(q, x: xt, gamma: gt, beta: bt, groups: groups, workspace: ws, dy: dyt, dx: dx,
                                               dgamma: params ? dgt : nil, dbeta: params ? dbt : nil, relu: relu,
                                               consumer: source, accumulate: accumulate)
                    }
                }
                let label = "relu \(relu)"
                try expectClose(q, dxt, grads.dx, backwardBound, "dx, \(label)")
                try expectClose(q, acc, zip(prior, grads.dx).map(+), backwardBound, "accumulated dx, \(label)")
                try expectClose(q, dgt, grads.dgamma, backwardBound, "dgamma, \(label)")
                try expectClose(q, dbt, grads.dbeta, backwardBound, "dbeta, \(label)")
                if let shortcut { try expectClose(q, shortcut, g, backwardBound, "shortcut gradient, \(label)") }
            }
        }
    }

    @Test(arguments: [0, 1, 2, 3])
    func referenceGradientsMatchFiniteDifferences(groups: Int) {
        var rng = freshGenerator("norm finite differences groups \(groups)")
        let shape: Shape = [2, 6, 2, 3]
        let groupCount = groups == 0 ? 0 : [1, 2, 3][groups - 1]
        let x = randomDoubles(shape.count, using: &rng), dy = randomDoubles(shape.count, using: &rng)
        let gamma = randomDoubles(shape.c, using: &rng, in: 0.5...1.5), beta = randomDoubles(shape.c, using: &rng)
        let zeros = [Double](repeating: 0, count: shape.c), ones = [Double](repeating: 1, count: shape.c)
        func forward(_ x: [Double], _ g: [Double], _ b: [Double]) -> [Double] {
            groupCount == 0
                ? Reference.batchNormTraining(x, shape: shape, gamma: g, beta: b, runningMean: zeros, runningVar: ones).y
                : Reference.groupNorm(x, shape: shape, gamma: g, beta: b, groups: groupCount)
        }
        let grads = Reference.normBackward(x, shape: shape, gamma: gamma, beta: beta, groups: groupCount, dy: dy)
        #expect(relativeError(grads.dx, finiteDifference(at: x) { dot(forward($0, gamma, beta), dy) }) < 1e-6)
        #expect(relativeError(grads.dgamma, finiteDifference(at: gamma) { dot(forward(x, $0, beta), dy) }) < 1e-6)
        #expect(relativeError(grads.dbeta, finiteDifference(at: beta) { dot(forward(x, gamma, $0), dy) }) < 1e-6)
    }

    @Test func badArgumentsThrow() throws {
        let q = try Shared.context().makeQueue()
        let x = try poisonedTensor(q, [1, 4, 1, 1]), v = try poisonedTensor(q, [4])
        let ws = try poisonedTensor(q, [BatchNorm.workspaceCount([1, 4, 1, 1])])
        let one = #expect(throws: CLNetError.self) {
            try BatchNorm.forwardTraining(q, x: x, gamma: v, beta: v, runningMean: v, runningVar: v, y: x, workspace: ws)
        }
        #expect("\(one!)".contains("BatchNorm") && "\(one!)".contains("[1, 4, 1, 1]"))
        let x2 = try poisonedTensor(q, [2, 6, 3, 3]), v6 = try poisonedTensor(q, [6])
        let groups = #expect(throws: CLNetError.self) {
            try GroupNorm.forward(q, x: x2, gamma: v6, beta: v6, groups: 4, y: x2, workspace: try poisonedTensor(q, [32]))
        }
        #expect("\(groups!)".contains("GroupNorm") && "\(groups!)".contains("4 groups"))
        let gamma = #expect(throws: CLNetError.self) {
            try BatchNorm.forwardInference(q, x: x2, gamma: v, beta: v6, runningMean: v6, runningVar: v6, y: x2)
        }
        #expect("\(gamma!)".contains("gamma") && "\(gamma!)".contains("[4]"))
    }
}

