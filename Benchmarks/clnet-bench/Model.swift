import ArgumentParser
import CLNet
import CLNetCLI

/// Times a model's training or inference step through the graph executor and shows where the
/// device time goes, layer by layer, against the device's GEMM rate and copy bandwidth measured
/// in the same run.
struct Model: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a model's step (images/s, per-layer device time against the device's peaks).",
        discussion: """
            Each timed step is measured twice: by the wall clock, from enqueueing to the device \
            being idle, and by OpenCL's profiling events, from the first command's start to the \
            last one's end. The per-layer table sums each layer's forward, backward and update \
            commands; its rates count each tensor once (Graph.cost), so GB/s is a lower bound of \
            the traffic. With several queue counts (--queues 1,2) the first is the baseline and \
            the layer table comes from it.
            """,
        aliases: ["step"])

    @OptionGroup var common: Common

    @OptionGroup var choice: ModelChoice

    @Option(help: "Queue count, or counts to compare in one run (comma-separated; the first is the baseline).")
    var queues = "1"

    @Flag(help: "Run on every OpenCL device in turn.")
    var allDevices = false

    @Option(help: "Rows of the per-layer table: the slowest N layers (0: every layer, in graph order).")
    var top = 25

    @Flag(help: "Also print device time by command (kernel or CLBlast routine).")
    var profile = false

    @Flag(help: "Also time one step of the CPU reference (plain Swift in Double) in the same run.")
    var reference = false

    @Flag(help: "Run without the memory plan's fusions (MemoryPlan.Fusions), to measure what they save.")
    var unfused = false

    @Flag(help: "Also let convolutions write their outputs' batch statistics (MemoryPlan.Fusions.convolutionStatistics, off by default).")
    var convolutionStatistics = false

    @Option(help: "How activations are stored: fp32, fp16 or bf16 (Precision; arithmetic stays float32).")
    var precision: Precision = .fp32

    /// One queue count's measurement.
    struct Run: Codable {
        var queues: Int
        var summary: ModelBenchmarkSummary
        /// Median wall time of the first queue count over this one's.
        var speedUpOverFirst: Double
        /// Device time of every command per step, summed over queues (above the span when queues overlap).
        var commandMilliseconds: Double
        /// Mean step wall time over the summed command time: the executor's and driver's own cost
        /// on one queue (1.0 would be none).
        var wallOverCommands: Double
        /// Constructing the executor: planning, allocating, scheduling.
        var buildSeconds: Double
    }

    /// Everything printed for one device; its top-level summary fields are the ones
    /// `Benchmarks/pytorch_baseline.py` prints.
    struct Report: Codable {
        var summary: ModelBenchmarkSummary
        var queues: Int
        var peak: DevicePeak
        var planBytes: Int
        var naivePlanBytes: Int
        /// The activation arena with 16-bit storage, beside `planBytes` at float32, and the
        /// precision this run stored its activations in.
        var planBytes16: Int
        var precision: Precision
        var parameters: Int
        /// The model's arithmetic per step (Graph.cost).
        var gflopPerStep: Double
        var layers: [WorkReport]
        var byOperation: [WorkReport]
        /// Uploads, markers and read-backs outside any layer, milliseconds per step.
        var otherMilliseconds: Double
        var byCommand: [String: Double]?
        var runs: [Run]
        var referenceSeconds: Double?
        /// Each distinct convolution's algorithms and why (`Conv2D.choose`).
        var convolutions: [ConvRow]

        func encode(to encoder: any Encoder) throws {
            // The shared summary fields at the top level, beside CLNet's own.
            try summary.encode(to: encoder)
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(queues, forKey: .queues)
            try c.encode(peak, forKey: .peak)
            try c.encode(planBytes, forKey: .planBytes)
            try c.encode(naivePlanBytes, forKey: .naivePlanBytes)
            try c.encode(planBytes16, forKey: .planBytes16)
            try c.encode(precision, forKey: .precision)
            try c.encode(parameters, forKey: .parameters)
            try c.encode(gflopPerStep, forKey: .gflopPerStep)
            try c.encode(layers, forKey: .layers)
            try c.encode(byOperation, forKey: .byOperation)
            try c.encode(otherMilliseconds, forKey: .otherMilliseconds)
            try c.encodeIfPresent(byCommand, forKey: .byCommand)
            try c.encode(runs, forKey: .runs)
            try c.encodeIfPresent(referenceSeconds, forKey: .referenceSeconds)
            try c.encode(convolutions, forKey: .convolutions)
        }

        enum Keys: String, CodingKey {
            case queues, peak, planBytes, naivePlanBytes, planBytes16, precision, parameters, gflopPerStep, layers, byOperation, otherMilliseconds,
                 byCommand, runs, referenceSeconds, convolutions
        }
    }

    /// The convolutions of one shape: their layers, and the algorithm of each direction.
    struct ConvRow: Codable {
        var layers: [String]
        var convolution: String
        var input: String
        var forward: String
        var data: String
        var weights: String
        var reason: String
    }

    func run() throws {
        let counts = queues.split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }
        guard !counts.isEmpty, counts.allSatisfy({ (1...16).contains($0) }) else {
            printError("clnet-bench: error: --queues takes counts from 1 to 16, comma-separated, not '\(queues)'")
            throw ExitCode(2)
        }
        let graph = try choice.graph()
        var contexts: [Context] = []
        if allDevices {
            do {
                for device in try Device.all() { contexts.append(try Context(device: device)) }
            } catch {
                printError("clnet-bench: error: \(error)")
                throw ExitCode(1)
            }
        } else {
            contexts = [try common.context()]
        }
        var reports: [Report] = []
        for context in contexts {
            let report: Report
            do { report = try measure(graph, on: context, counts: counts) } catch let error as CLNetError {
                printError("clnet-bench: error: \(error)")
                throw ExitCode(1)
            }
            if common.json { reports.append(report) } else { printReport(report, context: context) }
        }
        if common.json {
            if allDevices { try printJSON(reports) } else { try printJSON(reports[0]) }
        }
    }

    private func measure(_ graph: Graph, on context: Context, counts: [Int]) throws -> Report {
        let training = choice.training
        let peakGEMM = try timeGEMM(context, .square(context.device.info.type == "GPU" ? 4096 : 1024),
                                    warmup: common.warmup, iters: common.iters)
        let peakCopy = try timeCopy(context, bytes: min(256 << 20, context.device.info.maxAllocationBytes),
                                    warmup: common.warmup, iters: common.iters)
        let peak = DevicePeak(gemmGFLOPS: peakGEMM.gflops, copyGBPS: peakCopy.gbPerSecond)
        var rng = SystemRandomNumberGenerator()
        // Made after the first executor, whose memory check refuses a batch too large for the
        // device before this host array is allocated.
        var input: [Float] = []
        let classes = graph.lossNode.map { graph.shape(of: graph.nodes[$0].inputs[0])[1] } ?? 1
        let labels = (0..<choice.batch).map { _ in Int.random(in: 0..<classes, using: &rng) }
        let iters = max(1, common.iters)
        var runs: [Run] = []
        var baseline: ExecutorProfile?
        var choices: [Int: ConvChoice] = [:]
        for n in counts {
            let start = ContinuousClock.now
            let fusions: MemoryPlan.Fusions = unfused ? [] : convolutionStatistics ? MemoryPlan.Fusions.all.union(.convolutionStatistics) : .all
            let executor = try Executor(graph: graph, context: context, training: training, queues: n, fusions: fusions,
                                        precision: precision)
            if choices.isEmpty { choices = executor.convChoices }
            try executor.synchronize()
            let buildSeconds = seconds(since: start)
            if input.isEmpty {
                input = (0..<graph.shape(of: graph.inputs[0].value).count).map { _ in Float.random(in: -1...1, using: &rng) }
            }
            // He-style scale keeps activations finite; the values do not change the timing.
            for p in graph.parameters where p.role == .weight {
                let scale = Float((2 / Double(p.shape.sampleCount)).squareRoot())
                try executor.setParameter(p.name, (0..<p.shape.count).map { _ in Float.random(in: -scale...scale, using: &rng) })
            }
            func step() throws {
                try executor.forward(["input": input], labels: labels)
                if training { try executor.backward() }
                try executor.synchronize()
            }
            for _ in 0..<common.warmup { try step() }
            var wall: [Double] = [], spans: [Double] = []
            var total = ExecutorProfile(nodes: Array(repeating: .init(), count: graph.nodes.count))
            for _ in 0..<iters {
                executor.startProfiling()
                let t = ContinuousClock.now
                try step()
                wall.append(seconds(since: t))
                let profile = try executor.stopProfiling()
                spans.append(profile.spanSeconds)
                total.add(profile)
            }
            let mean = total.scaled(by: 1 / Double(iters))
            let summary = ModelBenchmarkSummary(
                framework: "clnet", model: choice.model, batch: choice.batch, size: choice.size, mode: choice.mode,
                device: context.device.info.name, warmup: common.warmup, iters: iters, wallSeconds: Timing(wall),
                deviceSeconds: Timing(spans), peakMemoryBytes: executor.deviceBytes)
            runs.append(Run(queues: n, summary: summary,
                            speedUpOverFirst: runs.first.map { $0.summary.milliseconds.median / summary.milliseconds.median } ?? 1,
                            commandMilliseconds: mean.commandSeconds * 1e3,
                            wallOverCommands: wall.reduce(0, +) / Double(iters) / mean.commandSeconds, buildSeconds: buildSeconds))
            if baseline == nil { baseline = mean }
        }
        let base = baseline!
        let stepSeconds = base.commandSeconds
        let plan = MemoryPlan(graph: graph, training: training)
        var layers: [(report: WorkReport, seconds: Double, cost: WorkCost)] = []
        for (k, node) in graph.nodes.enumerated() {
            let cost = graph.cost(of: k).total(training: training), t = base.nodes[k].totalSeconds
            // Its forward time is inside the convolution's before it (MemoryPlan.epilogues).
            var kind = node.operation.displayName
            if let c = choices[k] {
                kind = !training || (c.data == c.forward && c.weights == c.forward) ? "conv \(c.forward.rawValue)"
                    : "conv \(c.forward.rawValue), dx \(c.data.rawValue), dw \(c.weights.rawValue)"
            }
            if plan.fusedNodes.contains(k) { kind += " (fused into conv)" }
            layers.append((WorkReport(name: node.name, operation: kind, seconds: t,
                                      stepSeconds: stepSeconds, cost: cost, peak: peak), t, cost))
        }
        return Report(
            summary: runs[0].summary, queues: runs[0].queues, peak: peak, planBytes: plan.peakBytes, naivePlanBytes: plan.naiveBytes,
            planBytes16: plan.peakBytes(.fp16), precision: precision,
            parameters: graph.parameters.filter(\.trainable).reduce(0) { $0 + $1.shape.count },
            gflopPerStep: graph.cost(training: training).flops * 1e-9, layers: layers.map(\.report),
            byOperation: WorkReport.byOperation(layers, stepSeconds: stepSeconds, peak: peak),
            otherMilliseconds: base.otherSeconds * 1e3, byCommand: profile ? base.byCommand.mapValues { $0 * 1e3 } : nil,
            runs: runs, referenceSeconds: reference ? try referenceStep(graph, input: input, labels: labels) : nil,
            convolutions: Self.convRows(graph, choices))
    }

    /// One step of the CPU reference on the same input, in seconds.
    private func referenceStep(_ graph: Graph, input: [Float], labels: [Int]) throws -> Double {
        var rng = SystemRandomNumberGenerator()
        var params: [String: [Double]] = [:]
        for p in graph.parameters {
            let scale = p.role == .weight ? (2 / Double(p.shape.sampleCount)).squareRoot() : 0
            params[p.name] = p.role == .normWeight || p.role == .runningVar
                ? [Double](repeating: 1, count: p.shape.count)
                : (0..<p.shape.count).map { _ in Double.random(in: -scale...scale, using: &rng) }
        }
        var executor = try ReferenceExecutor(graph: graph, parameters: params)
        let start = ContinuousClock.now
        let values = try executor.forward(["input": input.map(Double.init)], labels: labels, training: choice.training)
        if choice.training { _ = try executor.backward(values: values, labels: labels) }
        return seconds(since: start)
    }

    /// One row per distinct (convolution, input shape), in graph order.
    static func convRows(_ graph: Graph, _ choices: [Int: ConvChoice]) -> [ConvRow] {
        var rows: [ConvRow] = [], index: [String: Int] = [:]
        for (k, node) in graph.nodes.enumerated() {
            guard case let .conv(conv, _) = node.operation, let c = choices[k] else { continue }
            let key = "\(conv) \(graph.shape(of: node.inputs[0]))"
            if let i = index[key] { rows[i].layers.append(node.name); continue }
            index[key] = rows.count
            rows.append(ConvRow(layers: [node.name], convolution: "\(conv)", input: "\(graph.shape(of: node.inputs[0]))",
                                forward: c.forward.rawValue, data: c.data.rawValue, weights: c.weights.rawValue,
                                reason: c.reason))
        }
        return rows
    }

    private func printReport(_ r: Report, context: Context) {
        let s = r.summary
        print("\(s.model), batch \(s.batch), \(s.size)x\(s.size), \(s.mode), \(r.precision) activations, on \(context.device)")
        print("device peaks (this run): GEMM \(format(r.peak.gemmGFLOPS)) GFLOP/s, copy \(format(r.peak.copyGBPS)) GB/s; "
              + "ridge \(format(r.peak.ridge, 2)) FLOP/byte")
        print("model: \(format(Double(r.parameters) / 1e6, 2)) M parameters, \(format(r.gflopPerStep, 2)) GFLOP per step; "
              + "activation plan \(r.planBytes >> 20) MiB at fp32, \(r.planBytes16 >> 20) MiB at 16 bits "
              + "(naive \(r.naivePlanBytes >> 20) MiB at fp32)")
        printTable(header: ["queues", "images/s", "median ms", "p10 ms", "p90 ms", "device ms", "commands ms",
                            "wall / commands", "speed-up vs first", "device MiB", "build s"], rows: r.runs.map {
            let d = $0.summary.deviceMilliseconds
            return ["\($0.queues)", format($0.summary.imagesPerSecond, 1), format($0.summary.milliseconds.median, 1),
                    format($0.summary.milliseconds.p10, 1), format($0.summary.milliseconds.p90, 1),
                    d.map { format($0.median, 1) } ?? "-", format($0.commandMilliseconds, 1), format($0.wallOverCommands, 3),
                    format($0.speedUpOverFirst, 3), "\(($0.summary.peakMemoryBytes ?? 0) >> 20)", format($0.buildSeconds, 3)]
        })
        let total = r.runs[0].commandMilliseconds
        print("")
        print("by operation (\(r.queues) queue\(r.queues == 1 ? "" : "s"); shares of \(format(total, 1)) ms of commands per step; "
              + "other commands \(format(r.otherMilliseconds, 1)) ms):")
        printTable(header: ["layers", "operation", "ms", "share", "GFLOP/s", "GB/s", "of GEMM", "of copy", "bound", "of roofline"],
                   rows: r.byOperation.map(Self.cells))
        let layers = top > 0 ? Array(r.layers.sorted { $0.milliseconds > $1.milliseconds }.prefix(top)) : r.layers
        print("")
        print(top > 0 ? "the \(layers.count) slowest layers:" : "every layer, in graph order:")
        printTable(header: ["layer", "operation", "ms", "share", "GFLOP/s", "GB/s", "of GEMM", "of copy", "bound", "of roofline"],
                   rows: layers.map(Self.cells))
        print("")
        print("convolution algorithms (forward, input gradient dx, weight gradient dw), per distinct shape:")
        printTable(header: ["layers", "convolution", "input", "forward", "dx", "dw", "why"], rows: r.convolutions.map {
            [$0.layers.count == 1 ? $0.layers[0] : "\($0.layers[0]) +\($0.layers.count - 1)", $0.convolution, $0.input,
             $0.forward, $0.data, $0.weights, $0.reason]
        })
        if let byCommand = r.byCommand {
            print("")
            print("device time by command:")
            printTable(header: ["command", "ms per step", "share"], rows: byCommand.sorted { $0.value > $1.value }.prefix(30).map {
                [$0.key, format($0.value, 2), format($0.value / total * 100, 1) + "%"]
            })
        }
        if let ref = r.referenceSeconds {
            print("")
            print("CPU reference (plain Swift, Double): \(format(ref, 2)) s per step; CLNet is "
                  + "\(format(ref / (r.summary.milliseconds.median * 1e-3), 1))x faster")
        }
        print("")
    }

    private static func cells(_ w: WorkReport) -> [String] {
        [w.name, w.operation, format(w.milliseconds, 2), format(w.share * 100, 1) + "%", format(w.gflops, 1),
         format(w.gbPerSecond, 2), format(w.gemmFraction, 3), format(w.copyFraction, 3), w.bound.rawValue,
         format(w.rooflineFraction, 3)]
    }
}

extension Precision: ExpressibleByArgument {}
