import ArgumentParser
import CLNet
import CLNetCLI

/// The memory plan of a model: the activation arena's peak against a buffer per tensor.
struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The planned activation memory of a model against the naive sum, and the time to plan it.")

    @OptionGroup var choice: ModelChoice

    @Flag(help: "Print JSON.")
    var json = false

    struct Report: Codable {
        var model: String
        var batch: Int
        var mode: String
        var nodes: Int
        var parameters: Int
        var peakBytes: Int
        /// The arena with activations stored in 16 bits (`Precision.fp16` or `.bf16`).
        var peakBytes16: Int
        var naiveBytes: Int
        var ratio: Double
        var buildSeconds: Double
        var planSeconds: Double
    }

    func run() throws {
        let start = ContinuousClock.now
        let graph = try choice.graph()
        let (model, batch, size, mode) = (choice.model, choice.batch, choice.size, choice.mode)
        let built = seconds(since: start)
        let planStart = ContinuousClock.now
        let plan = MemoryPlan(graph: graph, training: mode == "train")
        let planned = seconds(since: planStart)
        let report = Report(model: model, batch: batch, mode: mode, nodes: graph.nodes.count,
                            parameters: graph.trainableParameterCount, peakBytes: plan.peakBytes,
                            peakBytes16: plan.peakBytes(.fp16), naiveBytes: plan.naiveBytes,
                            ratio: Double(plan.peakBytes) / Double(plan.naiveBytes), buildSeconds: built, planSeconds: planned)
        if json { return try printJSON(report) }
        let mib = { (b: Int) in format(Double(b) / 1_048_576, 1) + " MiB" }
        print("\(model), batch \(batch), \(size)x\(size), \(mode): \(graph.nodes.count) nodes, \(graph.trainableParameterCount) parameters")
        print("activation arena (planned peak): \(mib(plan.peakBytes)) at fp32, \(mib(plan.peakBytes(.fp16))) at fp16/bf16 "
              + "(\(format(Double(plan.peakBytes(.fp16)) / Double(plan.peakBytes), 3)) of fp32)")
        print("one buffer per tensor (naive):   \(mib(plan.naiveBytes))")
        print("planned / naive:                 \(format(report.ratio, 3))")
        print("graph built in \(format(built * 1e3, 1)) ms, planned in \(format(planned * 1e3, 1)) ms")
    }
}

/// The model a subcommand builds: name or specification, batch, image size and mode.
struct ModelChoice: ParsableArguments {
    @Option(help: "A model name (`clnet models` lists them) or specification, e.g. resnet:block=basic,layers=2.2.2.2.")
    var model = "resnet50"

    @Option(help: "Batch size.")
    var batch = 8

    @Option(name: .customLong("size"), help: "Image size (default: the model's own, 224 or 32).")
    var imageSize: Int?

    @Option(help: "train or infer.")
    var mode = "train"

    var training: Bool { mode == "train" }
    var size: Int { imageSize ?? ModelSpec.defaultSize(model) }

    /// The graph, or a one-line error and a non-zero exit.
    func graph() throws -> Graph {
        guard mode == "train" || mode == "infer" else {
            printError("clnet-bench: error: --mode must be train or infer, not '\(mode)'")
            throw ExitCode(2)
        }
        do { return try ModelSpec.graph(model, batch: batch, size: size, loss: training).graph } catch {
            printError("clnet-bench: error: \(error)")
            throw ExitCode(1)
        }
    }
}
