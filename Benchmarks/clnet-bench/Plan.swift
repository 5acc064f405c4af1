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
                            parameters: graph.trainableParameterCount, peakBytes: plan.peakBytes, naiveBytes: plan.naiveBytes,
                            ratio: Double(plan.peakBytes) / Double(plan.naiveBytes), buildSeconds: built, planSeconds: planned)
        if json { return try printJSON(report) }
        let mib = { (b: Int) in format(Double(b) / 1_048_576, 1) + " MiB" }
        print("\(model), batch \(batch), \(size)x\(size), \(mode): \(graph.nodes.count) nodes, \(graph.trainableParameterCount) parameters")
        print("activation arena (planned peak): \(mib(plan.peakBytes))")
        print("one buffer per tensor (naive):   \(mib(plan.naiveBytes))")
        print("planned / naive:                 \(format(report.ratio, 3))")
        print("graph built in \(format(built * 1e3, 1)) ms, planned in \(format(planned * 1e3, 1)) ms")
    }
}

/// The model a subcommand builds: name, batch, image size and mode.
struct ModelChoice: ParsableArguments {
    @Option(help: "resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d, wide_resnet50_2, densenet121, densenet161, densenet169, densenet201, or the CIFAR resnet20, resnet56, resnet110 (with --size 32).")
    var model = "resnet50"

    @Option(help: "Batch size.")
    var batch = 8

    @Option(help: "Image size.")
    var size = 224

    @Option(help: "train or infer.")
    var mode = "train"

    var training: Bool { mode == "train" }

    static let models: [String: @Sendable (Int, Int) throws -> Graph] = [
        "resnet18": { try ResNet.resnet18.graph(batch: $0, size: $1).graph },
        "resnet34": { try ResNet.resnet34.graph(batch: $0, size: $1).graph },
        "resnet50": { try ResNet.resnet50.graph(batch: $0, size: $1).graph },
        "resnet101": { try ResNet.resnet101.graph(batch: $0, size: $1).graph },
        "resnet152": { try ResNet.resnet152.graph(batch: $0, size: $1).graph },
        "resnext50_32x4d": { try ResNet.resnext50_32x4d.graph(batch: $0, size: $1).graph },
        "resnext101_32x8d": { try ResNet.resnext101_32x8d.graph(batch: $0, size: $1).graph },
        "wide_resnet50_2": { try ResNet.wide_resnet50_2.graph(batch: $0, size: $1).graph },
        "densenet121": { try DenseNet.densenet121.graph(batch: $0, size: $1).graph },
        "densenet161": { try DenseNet.densenet161.graph(batch: $0, size: $1).graph },
        "densenet169": { try DenseNet.densenet169.graph(batch: $0, size: $1).graph },
        "densenet201": { try DenseNet.densenet201.graph(batch: $0, size: $1).graph },
        // CIFAR models: pass --size 32.
        "resnet20": { try CIFARResNet(depth: 20).graph(batch: $0, size: $1).graph },
        "resnet56": { try CIFARResNet(depth: 56).graph(batch: $0, size: $1).graph },
        "resnet110": { try CIFARResNet(depth: 110).graph(batch: $0, size: $1).graph },
    ]

    /// The graph, or a one-line error and a non-zero exit.
    func graph() throws -> Graph {
        guard let make = Self.models[model] else {
            printError("clnet-bench: error: unknown model '\(model)'; one of \(Self.models.keys.sorted().joined(separator: ", "))")
            throw ExitCode(2)
        }
        guard mode == "train" || mode == "infer" else {
            printError("clnet-bench: error: --mode must be train or infer, not '\(mode)'")
            throw ExitCode(2)
        }
        do { return try make(batch, size) } catch {
            printError("clnet-bench: error: \(error)")
            throw ExitCode(1)
        }
    }
}
