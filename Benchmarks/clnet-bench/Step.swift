import ArgumentParser
import CLNet
import CLNetCLI

/// Times whole training (or inference) steps of a model through the graph executor, for each
/// queue count given, in one run, so that the ratio between them is meaningful on a shared machine.
struct Step: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a model's training or inference step with the executor on 1 and more queues, in one run.")

    @OptionGroup var common: Common

    @OptionGroup var choice: ModelChoice

    @Option(help: "Queue counts to compare, comma-separated; the first is the baseline.")
    var queues = "1,2"

    @Flag(help: "Also time one step of the CPU reference (plain Swift in Double) in the same run.")
    var reference = false

    @Flag(help: "Print where the device time goes, by kernel, for the first queue count.")
    var profile = false

    struct Row: Codable {
        var queues: Int
        var time: Timing
        var imagesPerSecond: Double
        var ratioToFirst: Double
        var initSeconds: Double
        /// Constructing the executor alone: planning, allocating, scheduling.
        var buildSeconds: Double
        /// Device time of every recorded command per step, summed over queues.
        var kernelSeconds: Double
        /// Step wall time over the summed device time: the executor's and driver's own cost on one
        /// queue (1.0 would be none); below 1 when queues overlap.
        var wallOverKernels: Double
        /// One step of the CPU reference, with `--reference`, and this row's speed-up over it.
        var referenceSeconds: Double?
        var speedUpOverReference: Double?
    }

    func run() throws {
        let context = try common.context()
        let graph = try choice.graph()
        let training = choice.training
        let (model, batch, size, mode) = (choice.model, choice.batch, choice.size, choice.mode)
        let counts = queues.split(separator: ",").compactMap { Int($0) }
        var rng = SystemRandomNumberGenerator()
        let input = (0..<graph.shape(of: graph.inputs[0].value).count).map { _ in Float.random(in: -1...1, using: &rng) }
        let classes = graph.lossNode.map { graph.shape(of: graph.nodes[$0].inputs[0])[1] } ?? 1
        let labels = (0..<batch).map { _ in Int.random(in: 0..<classes, using: &rng) }
        var rows: [Row] = []
        for n in counts {
            let start = ContinuousClock.now
            let executor = try Executor(graph: graph, context: context, training: training, queues: n)
            try executor.synchronize()
            let buildSeconds = seconds(since: start)
            // He-style scale keeps activations finite; the values do not change the timing.
            for p in graph.parameters where p.role == .weight {
                let fanIn = Double(p.shape.sampleCount)
                let scale = Float((2 / fanIn).squareRoot())
                try executor.setParameter(p.name, (0..<p.shape.count).map { _ in Float.random(in: -scale...scale, using: &rng) })
            }
            try executor.synchronize()
            let initSeconds = seconds(since: start)
            func step() throws {
                try executor.forward(["input": input], labels: labels)
                if training { try executor.backward() }
                try executor.synchronize()
            }
            for _ in 0..<common.warmup { try step() }
            var samples: [Double] = []
            for q in executor.queues { q.startRecording() }
            for _ in 0..<max(1, common.iters) {
                let t = ContinuousClock.now
                try step()
                samples.append(seconds(since: t))
            }
            var deviceSeconds = 0.0
            var byKernel: [String: (Double, Int)] = [:]
            for q in executor.queues {
                for (name, event) in q.stopRecording() {
                    let t = try event.elapsedSeconds()
                    deviceSeconds += t
                    byKernel[name, default: (0, 0)].0 += t
                    byKernel[name, default: (0, 0)].1 += 1
                }
            }
            if profile && rows.isEmpty && !common.json {
                let iters = Double(max(1, common.iters))
                print("device time per step by command, \(n) queue\(n == 1 ? "" : "s"):")
                printTable(header: ["command", "ms per step", "share", "launches per step"], rows: byKernel.sorted { $0.value.0 > $1.value.0 }
                    .prefix(25).map { ["\($0.key)", format($0.value.0 / iters * 1e3, 2), format($0.value.0 / deviceSeconds * 100, 1) + "%",
                                       format(Double($0.value.1) / iters, 0)] })
            }
            let perStep = deviceSeconds / Double(max(1, common.iters))
            let time = Timing(samples)
            rows.append(Row(queues: n, time: time, imagesPerSecond: Double(batch) / time.median,
                            ratioToFirst: rows.first.map { $0.time.median / time.median } ?? 1, initSeconds: initSeconds,
                            buildSeconds: buildSeconds,
                            kernelSeconds: perStep, wallOverKernels: samples.reduce(0, +) / Double(samples.count) / perStep))
        }
        if reference {
            var params: [String: [Double]] = [:]
            for p in graph.parameters {
                let scale = p.role == .weight ? (2 / Double(p.shape.sampleCount)).squareRoot() : 0
                params[p.name] = p.role == .normWeight || p.role == .runningVar
                    ? [Double](repeating: 1, count: p.shape.count)
                    : (0..<p.shape.count).map { _ in Double.random(in: -scale...scale, using: &rng) }
            }
            var executor = try ReferenceExecutor(graph: graph, parameters: params)
            let start = ContinuousClock.now
            let values = try executor.forward(["input": input.map(Double.init)], labels: labels, training: training)
            if training { _ = try executor.backward(values: values, labels: labels) }
            let referenceSeconds = seconds(since: start)
            for i in rows.indices {
                rows[i].referenceSeconds = referenceSeconds
                rows[i].speedUpOverReference = referenceSeconds / rows[i].time.median
            }
        }
        if common.json { return try printJSON(rows) }
        print("\(model), batch \(batch), \(size)x\(size), \(mode), on \(context.device); plan peak \(MemoryPlan(graph: graph, training: training).peakBytes >> 20) MiB")
        printTable(header: ["queues", "median ms", "p10 ms", "p90 ms", "images/s", "speed-up vs first", "kernels ms",
                            "wall / kernels", "build s", "init s"], rows: rows.map {
            ["\($0.queues)", format($0.time.median * 1e3, 1), format($0.time.p10 * 1e3, 1), format($0.time.p90 * 1e3, 1),
             format($0.imagesPerSecond, 1), format($0.ratioToFirst, 3), format($0.kernelSeconds * 1e3, 1),
             format($0.wallOverKernels, 3), format($0.buildSeconds, 3), format($0.initSeconds, 3)]
        })
        print("kernels: device time of every command (the last kernel of each CLBlast call) summed over queues, per step;")
        print("wall / kernels: mean step time over it, the executor's and driver's own cost on one queue")
        print("build: constructing the executor (plan, buffers, schedule); init: that plus uploading the parameters")
        if let r = rows.first?.referenceSeconds {
            print("CPU reference (plain Swift, Double): \(format(r, 2)) s per step; CLNet is "
                  + rows.map { "\(format($0.speedUpOverReference ?? 0, 1))x faster on \($0.queues) queue\($0.queues == 1 ? "" : "s")" }
                      .joined(separator: ", "))
        }
    }
}
