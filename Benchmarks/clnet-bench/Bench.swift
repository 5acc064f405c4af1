import ArgumentParser
import CLNet
import CLNetCLI

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clnet-bench",
        abstract: "Measure CLNet on an OpenCL device: peak rates, GEMM and its tuning, operators, memory plans, whole models layer by layer, and image decoding (Benchmarks/compare.sh sets a model against PyTorch).",
        version: CLNet.version,
        subcommands: [Peak.self, GEMMBench.self, GEMMTune.self, Ops.self, ConvTime.self, ConvError.self, Plan.self, Model.self, Decode.self]
    )
}

/// Options every subcommand shares.
struct Common: ParsableArguments {
    @Option(help: "Device index or name substring (default: CLNET_DEVICE, else the first GPU).")
    var device: String?

    @Option(help: "Untimed runs before measuring.")
    var warmup = 2

    @Option(help: "Timed runs; the median is reported.")
    var iters = 10

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func context() throws -> Context {
        do {
            let dev = try device.map { spec throws(CLNetError) in try Device.select(spec) } ?? Device.default
            return try Context(device: dev)
        } catch {
            printError("clnet-bench: error: \(error)")
            throw ExitCode(1)
        }
    }
}

/// Runs `body` (which enqueues work) `warmup` times, then `iters` times each followed by
/// `queue.finish()`, and returns the wall-clock timings.
func measure(_ queue: CommandQueue, warmup: Int, iters: Int, _ body: () throws -> Void) throws -> Timing {
    for _ in 0..<warmup { try body() }
    try queue.finish()
    var samples: [Double] = []
    for _ in 0..<max(1, iters) {
        let start = ContinuousClock.now
        try body()
        try queue.finish()
        samples.append(seconds(since: start))
    }
    return Timing(samples)
}
