import ArgumentParser
import CLNet
import CLNetCLI

/// Times each operator on the device and reports it against the device's GEMM rate and copy
/// bandwidth, both measured in the same run.
struct Ops: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every operator's time, GFLOP/s against GEMM and GB/s against a device copy, measured in one run.")

    @OptionGroup var common: Common

    @Option(help: "Batch size of the operator shapes (ResNet-50's 56x56 stage at this batch).")
    var batch = 8

    @Option(help: "Run only operators whose name contains this text.")
    var only: String?

    struct Row: Codable {
        var name: String
        var shape: String
        var algorithm: String
        var milliseconds: Double
        var gflops: Double
        /// Achieved GFLOP/s over a single GEMM with the same FLOP count (convolutions, linear).
        var fractionOfGEMM: Double?
        var gbPerSecond: Double
        /// Achieved GB/s (fewest bytes: inputs read once, outputs written once) over a copy of as many
        /// bytes: the median over samples of the op each set against a copy timed next to it.
        var fractionOfCopy: Double
        var bound: String
    }

    struct Report: Codable {
        var device: DeviceInfo
        var peakGEMM: GEMMResult
        var rows: [Row]
    }

    func run() throws {
        let context = try common.context()
        let q = try context.makeQueue()
        let peak = try timeGEMM(context, .square(context.device.info.type == "GPU" ? 4096 : 1024),
                                warmup: common.warmup, iters: common.iters)
        // A copy of as many bytes as the op moves (half read, half written), by whichever way was
        // faster (CopyResult), run alternately with the op: on a shared host the rate of both
        // moves by 2-4x within a minute, so each op sample is set against the copy beside it.
        var copies: [Int: Copy] = [:]
        func copy(_ bytes: Int) throws -> Copy {
            let half = max(4, (bytes / 2) & ~3)
            if let c = copies[half] { return c }
            let c = try Copy(context, q, bytes: half, warmup: common.warmup, iters: common.iters)
            copies[half] = c
            return c
        }
        var rows: [Row] = []
        for bench in try OpBench.all(context, q, batch: batch) where only.map({ bench.name.contains($0) }) ?? true {
            let run = try bench.prepare()
            let yardstick = try copy(bench.bytes)
            let (time, fraction) = try measurePaired(q, warmup: common.warmup, iters: common.iters, run, yardstick.run,
                                                     ratio: { op, copy in Double(bench.bytes) / op * 1e-9 / yardstick.rate(copy) })
            let gflops = bench.flops / time.median * 1e-9
            let gbs = Double(bench.bytes) / time.median * 1e-9
            var gemmFraction: Double? = nil
            if let shape = bench.equivalentGEMM {
                let g = try timeGEMM(context, shape, warmup: common.warmup, iters: common.iters)
                gemmFraction = gflops / g.gflops
            }
            let computeTime = bench.flops / (peak.gflops * 1e9), memoryTime = time.median * fraction
            rows.append(Row(name: bench.name, shape: bench.shape, algorithm: bench.algorithm,
                            milliseconds: time.median * 1e3, gflops: gflops, fractionOfGEMM: gemmFraction,
                            gbPerSecond: gbs, fractionOfCopy: fraction,
                            bound: computeTime > memoryTime ? "compute" : "memory"))
            if !common.json {
                let r = rows.last!
                print([r.name, r.shape, r.algorithm, format(r.milliseconds, 3), format(r.gflops),
                       r.fractionOfGEMM.map { format($0, 2) } ?? "-", format(r.gbPerSecond), format(r.fractionOfCopy, 2),
                       r.bound].joined(separator: "  "))
                flushOutput()
            }
        }
        if common.json { return try printJSON(Report(device: context.device.info, peakGEMM: peak, rows: rows)) }
        print("\ndevice: \(context.device); GEMM peak \(format(peak.gflops)) GFLOP/s (\(peak.shape.label)^3)")
        printTable(header: ["op", "shape", "algorithm", "ms", "GFLOP/s", "of GEMM", "GB/s", "of copy", "bound"],
                   rows: rows.map { r in
                       [r.name, r.shape, r.algorithm, format(r.milliseconds, 3), format(r.gflops),
                        r.fractionOfGEMM.map { format($0, 2) } ?? "-", format(r.gbPerSecond), format(r.fractionOfCopy, 2), r.bound]
                   })
    }
}

/// One operator at one shape: what it costs in FLOPs and in the fewest bytes it must move, and a
/// closure that enqueues it once.
struct OpBench {
    var name: String
    var shape: String
    var algorithm = "-"
    var flops: Double = 0
    var bytes: Int
    /// For GEMM-based operators: one GEMM with the same FLOP count, timed in the same run.
    var equivalentGEMM: GEMMShape? = nil
    var prepare: () throws -> (() throws -> Void)

    static func all(_ context: Context, _ q: CommandQueue, batch n: Int) throws -> [OpBench] {
        func tensor(_ shape: Shape) throws -> Tensor {
            let t = try Tensor(context: context, shape: shape)
            try q.write((0..<shape.count).map { _ in Float.random(in: -1...1) }, to: t)
            return t
        }
        func positive(_ shape: Shape) throws -> Tensor {
            let t = try Tensor(context: context, shape: shape)
            try q.write((0..<shape.count).map { _ in Float.random(in: 0.5...1.5) }, to: t)
            return t
        }
        var list: [OpBench] = []

        // Convolutions of ResNet-50 / ResNeXt-50 at the 56x56 stage, and the stem.
        let convs: [(String, Shape, Conv2D)] = [
            ("conv1x1 64->256", [n, 64, 56, 56], Conv2D(inChannels: 64, outChannels: 256, kernel: 1)),
            ("conv3x3 64->64", [n, 64, 56, 56], Conv2D(inChannels: 64, outChannels: 64, kernel: 3, padding: 1)),
            ("conv3x3 g32 128", [n, 128, 56, 56], Conv2D(inChannels: 128, outChannels: 128, kernel: 3, padding: 1, groups: 32)),
            ("conv3x3 g32 1024 7x7", [n, 1024, 7, 7], Conv2D(inChannels: 1024, outChannels: 1024, kernel: 3, padding: 1, groups: 32)),
            ("conv3x3 depthwise 64", [n, 64, 56, 56], Conv2D(inChannels: 64, outChannels: 64, kernel: 3, padding: 1, groups: 64)),
            ("conv7x7 s2 stem", [n, 3, 224, 224], Conv2D(inChannels: 3, outChannels: 64, kernel: 7, stride: 2, padding: 3)),
            // ResNet-20's first stage, at 8x the batch (as ResNet-20 is run at 64 where ResNet-50 is at 8).
            ("conv3x3 16->16 32x32", [8 * n, 16, 32, 32], Conv2D(inChannels: 16, outChannels: 16, kernel: 3, padding: 1)),
        ]
        for (name, xs, conv) in convs {
            let ys = try conv.outputShape(xs)
            let f = 2.0 * Double(ys.count) * Double(conv.inChannels / conv.groups * conv.kernel.h * conv.kernel.w)
            let io = 4 * (xs.count + conv.weightShape.count + ys.count)
            let gemm = GEMMShape(label: name, m: conv.outChannels, n: n * ys.h * ys.w,
                                 k: conv.inChannels / conv.groups * conv.kernel.h * conv.kernel.w)
            let shape = "\(xs)"
            list.append(OpBench(name: name + " fwd", shape: shape, algorithm: conv.algorithm(on: context.device).rawValue, flops: f, bytes: io,
                                equivalentGEMM: gemm) {
                let x = try tensor(xs), w = try tensor(conv.weightShape), y = try Tensor(context: context, shape: ys)
                let wsCount = try conv.workspaceCount(xs)
                let ws = wsCount > 0 ? try Tensor(context: context, shape: [wsCount]) : nil
                return { try conv.forward(q, x: x, weight: w, bias: nil, y: y, workspace: ws) }
            })
            list.append(OpBench(name: name + " bwd", shape: shape, algorithm: conv.algorithm(on: context.device).rawValue, flops: 2 * f,
                                bytes: io + 4 * (xs.count + conv.weightShape.count), equivalentGEMM: gemm) {
                let x = try tensor(xs), w = try tensor(conv.weightShape), dy = try tensor(ys)
                let dx = try Tensor(context: context, shape: xs), dw = try Tensor(context: context, shape: conv.weightShape)
                let wsCount = try conv.workspaceCount(xs)
                let ws = wsCount > 0 ? try Tensor(context: context, shape: [wsCount]) : nil
                return { try conv.backward(q, x: x, weight: w, dy: dy, dx: dx, dweight: dw, dbias: nil, workspace: ws) }
            })
        }

        // Memory-bound operators on the 56x56 stage's activations.
        let s: Shape = [n, 64, 56, 56]
        let c = s.c, count = s.count, act = "\(s)"
        list.append(OpBench(name: "batchnorm train fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let rm = try tensor([c]), rv = try positive([c]), ws = try Tensor(context: context, shape: [BatchNorm.workspaceCount(s)])
            return { try BatchNorm.forwardTraining(q, x: x, gamma: g, beta: b, runningMean: rm, runningVar: rv, y: y, workspace: ws) }
        })
        list.append(OpBench(name: "batchnorm+relu train fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let rm = try tensor([c]), rv = try positive([c]), ws = try Tensor(context: context, shape: [BatchNorm.workspaceCount(s)])
            return { try BatchNorm.forwardTraining(q, x: x, gamma: g, beta: b, runningMean: rm, runningVar: rv, y: y,
                                                   workspace: ws, relu: true) }
        })
        list.append(OpBench(name: "batchnorm inference", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let rm = try tensor([c]), rv = try positive([c])
            return { try BatchNorm.forwardInference(q, x: x, gamma: g, beta: b, runningMean: rm, runningVar: rv, y: y) }
        })
        list.append(OpBench(name: "batchnorm+relu bwd", shape: act, bytes: 12 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let rm = try tensor([c]), rv = try positive([c]), ws = try Tensor(context: context, shape: [BatchNorm.workspaceCount(s)])
            try BatchNorm.forwardTraining(q, x: x, gamma: g, beta: b, runningMean: rm, runningVar: rv, y: y, workspace: ws, relu: true)
            let dy = try tensor(s), dx = try Tensor(context: context, shape: s), dg = try Tensor(context: context, shape: [c])
            let db = try Tensor(context: context, shape: [c])
            return { try BatchNorm.backward(q, x: x, gamma: g, beta: b, workspace: ws, dy: dy, dx: dx, dgamma: dg, dbeta: db, relu: true) }
        })
        list.append(OpBench(name: "groupnorm(32) fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let ws = try Tensor(context: context, shape: [GroupNorm.workspaceCount(s, groups: 32)])
            return { try GroupNorm.forward(q, x: x, gamma: g, beta: b, groups: 32, y: y, workspace: ws) }
        })
        list.append(OpBench(name: "groupnorm(32) bwd", shape: act, bytes: 12 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s), g = try positive([c]), b = try tensor([c])
            let ws = try Tensor(context: context, shape: [GroupNorm.workspaceCount(s, groups: 32)])
            try GroupNorm.forward(q, x: x, gamma: g, beta: b, groups: 32, y: y, workspace: ws)
            let dy = try tensor(s), dx = try Tensor(context: context, shape: s), dg = try Tensor(context: context, shape: [c])
            let db = try Tensor(context: context, shape: [c])
            return { try GroupNorm.backward(q, x: x, gamma: g, beta: b, groups: 32, workspace: ws, dy: dy, dx: dx, dgamma: dg, dbeta: db) }
        })
        list.append(OpBench(name: "relu fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s)
            return { try ReLU.forward(q, x: x, y: y) }
        })
        list.append(OpBench(name: "relu bwd", shape: act, bytes: 12 * count) {
            let y = try tensor(s), dy = try tensor(s), dx = try Tensor(context: context, shape: s)
            return { try ReLU.backward(q, y: y, dy: dy, dx: dx) }
        })
        list.append(OpBench(name: "prelu fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), a = try positive([c]), y = try Tensor(context: context, shape: s)
            return { try PReLU.forward(q, x: x, slope: a, y: y) }
        })
        // dx and the slopes' gradient: x and dy read once, dx written (the slopes are 64 floats).
        list.append(OpBench(name: "prelu bwd", shape: act, bytes: 12 * count) {
            let x = try tensor(s), a = try positive([c]), dy = try tensor(s), dx = try Tensor(context: context, shape: s)
            let da = try Tensor(context: context, shape: [c])
            return { _ = try PReLU.backward(q, x: x, slope: a, dy: dy, dx: dx, dslope: da) }
        })
        list.append(OpBench(name: "add+relu fwd", shape: act, bytes: 12 * count) {
            let a = try tensor(s), b = try tensor(s), y = try Tensor(context: context, shape: s)
            return { try Add.forward(q, a: a, b: b, y: y, relu: true) }
        })
        list.append(OpBench(name: "dropout fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: s)
            return { try Dropout.forward(q, x: x, y: y, p: 0.3, seed: 1) }
        })
        list.append(OpBench(name: "channel scale fwd", shape: act, bytes: 8 * count) {
            let x = try tensor(s), sc = try tensor([n, c]), y = try Tensor(context: context, shape: s)
            return { try ChannelScale.forward(q, x: x, scale: sc, y: y) }
        })
        let p3 = Pool2D(kernel: 3, stride: 2, padding: 1)
        let pooled = try p3.outputShape("bench", s)
        list.append(OpBench(name: "maxpool 3x3 s2 fwd", shape: act, bytes: 4 * count + 8 * pooled.count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: pooled)
            let idx = try context.buffer(bytes: pooled.count * 4)
            return { try MaxPool.forward(q, x: x, y: y, indices: idx, window: p3) }
        })
        list.append(OpBench(name: "maxpool 3x3 s2 bwd", shape: act, bytes: 4 * count + 8 * pooled.count) {
            let x = try tensor(s), y = try Tensor(context: context, shape: pooled)
            let idx = try context.buffer(bytes: pooled.count * 4)
            try MaxPool.forward(q, x: x, y: y, indices: idx, window: p3)
            let dy = try tensor(pooled), dx = try Tensor(context: context, shape: s)
            return { try MaxPool.backward(q, dy: dy, indices: idx, dx: dx, window: p3) }
        })
        let p2 = Pool2D(kernel: 2)
        let halved = try p2.outputShape("bench", s)
        list.append(OpBench(name: "avgpool 2x2 fwd", shape: act, bytes: 4 * (count + halved.count)) {
            let x = try tensor(s), y = try Tensor(context: context, shape: halved)
            return { try AvgPool.forward(q, x: x, y: y, window: p2) }
        })
        list.append(OpBench(name: "global avgpool fwd", shape: act, bytes: 4 * (count + n * c)) {
            let x = try tensor(s), y = try Tensor(context: context, shape: [n, c])
            return { try GlobalAvgPool.forward(q, x: x, y: y) }
        })
        list.append(OpBench(name: "concat 2 inputs", shape: act, bytes: 8 * count) {
            let half: Shape = [n, c / 2, 56, 56]
            let a = try tensor(half), b = try tensor(half), y = try Tensor(context: context, shape: s)
            return { try Concat.forward(q, inputs: [a, b], y: y) }
        })
        list.append(OpBench(name: "linear 2048->1000 fwd", shape: "[\(n), 2048]", flops: 2.0 * Double(n) * 2048 * 1000,
                            bytes: 4 * (n * 2048 + 2048 * 1000 + n * 1000),
                            equivalentGEMM: GEMMShape(label: "fc", m: n, n: 1000, k: 2048)) {
            let x = try tensor([n, 2048]), w = try tensor([1000, 2048]), b = try tensor([1000])
            let y = try Tensor(context: context, shape: [n, 1000])
            return { try Linear.forward(q, x: x, weight: w, bias: b, y: y) }
        })
        list.append(OpBench(name: "softmax xent fwd+bwd", shape: "[\(n), 1000]", bytes: 4 * 3 * n * 1000) {
            let z = try tensor([n, 1000]), dz = try Tensor(context: context, shape: [n, 1000])
            let labels = try context.buffer(bytes: n * 4)
            try q.write((0..<n).map { _ in Int32.random(in: 0..<1000) }, to: labels)
            let r = try Tensor(context: context, shape: [2]), ws = try Tensor(context: context, shape: [2 * n])
            return {
                try SoftmaxCrossEntropy.forward(q, logits: z, labels: labels, result: r, workspace: ws)
                try SoftmaxCrossEntropy.backward(q, logits: z, labels: labels, dlogits: dz)
            }
        })
        let params = 25_557_032
        list.append(OpBench(name: "sgd momentum (resnet50 params)", shape: "[\(params)]", bytes: 4 * 5 * params) {
            let p = try tensor([params]), g = try tensor([params]), m = try tensor([params])
            let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
            return { try sgd.step(q, parameters: p, gradients: g, momentumBuffer: m) }
        })
        return list
    }
}

/// A copy of `bytes` (read, and as many written) run the faster of the two ways `timeCopy` tries.
struct Copy {
    let bytes: Int
    let run: () throws -> Void

    init(_ context: Context, _ queue: CommandQueue, bytes: Int, warmup: Int, iters: Int) throws {
        let result = try timeCopy(context, bytes: bytes, warmup: warmup, iters: iters)
        let copies = try copyBodies(context, queue, bytes: bytes)
        self.bytes = bytes
        run = result.kernelCopyGBPerSecond > result.bufferCopyGBPerSecond ? copies.kernel : copies.buffer
    }

    /// GB/s, bytes read plus bytes written, of a copy that took `seconds`.
    func rate(_ seconds: Double) -> Double { 2 * Double(bytes) / seconds * 1e-9 }
}

/// Times `op` and `copy` alternately, `iters` pairs after `warmup` of each: the op's timing, and
/// the median over the pairs of `ratio(op seconds, copy seconds)`.
func measurePaired(_ queue: CommandQueue, warmup: Int, iters: Int, _ op: () throws -> Void, _ copy: () throws -> Void,
                   ratio: (Double, Double) -> Double) throws -> (Timing, Double) {
    func timed(_ body: () throws -> Void) throws -> Double {
        let start = ContinuousClock.now
        try body()
        try queue.finish()
        return seconds(since: start)
    }
    for _ in 0..<warmup {
        try op()
        try copy()
    }
    try queue.finish()
    var opSamples: [Double] = [], ratios: [Double] = []
    for _ in 0..<max(1, iters) {
        let t = try timed(op)
        opSamples.append(t)
        ratios.append(ratio(t, try timed(copy)))
    }
    return (Timing(opSamples), Timing(ratios).median)
}
