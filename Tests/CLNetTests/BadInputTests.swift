import CLNet
import Foundation
import Testing

/// What people will feed the commands: wrong models and specifications, files of the wrong kind,
/// shape, type or content, data folders missing or half-written, checkpoints of another run or
/// another CLNet, devices that do not exist, options out of range, and environment variables
/// that make no sense. Each case must exit non-zero with a one-line message that says what was
/// wrong, and leave no output file behind.
@Suite("Bad input to the commands", .serialized)
struct BadInputTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var tool = "clnet"
        var arguments: [String]
        var environment: [String: String] = [:]
        /// Text the message must contain.
        var message: String
        var exitCode: Int32 = 1
        /// Paths (relative to the fixtures folder) that must not exist afterwards.
        var absent: [String] = ["out.safetensors", "run"]
        var testDescription: String { "\(tool) \(arguments.joined(separator: " "))" }
    }

    static let model = "resnet20:channels=1"
    static let run = ["run", "--model", model, "--weights", "w.safetensors", "--output", "out.safetensors"]

    static let cases: [Case] = [
        // Models and specifications.
        Case(arguments: ["run", "--model", "nosuch", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "unknown model 'nosuch'"),
        Case(arguments: ["run", "--model", "resnet:layers=2.x", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "layers=2.x must be up to 8 positive integers"),
        Case(arguments: ["run", "--model", "resnet20:foo=1", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "unknown parameter 'foo'"),
        Case(arguments: ["run", "--model", "resnet20:classes=0", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "classes=0 must be an integer from 1"),
        Case(arguments: ["run", "--model", "resnet18:norm=none", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "norm=none"),
        Case(arguments: ["run", "--model", "resnet18:dilation=1.1", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "dilation takes 3 flags"),
        Case(arguments: ["run", "--model", "resnet18:se=16,sk=16", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "exclude each other"),
        Case(arguments: ["run", "--model", "resnet20:act=tanh", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "act=tanh must be one of"),
        // Weights files.
        Case(arguments: ["run", "--model", model, "--weights", "missing.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "does not exist"),
        Case(arguments: ["run", "--model", model, "--weights", "garbage.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "not safetensors"),
        Case(arguments: ["run", "--model", model, "--weights", "truncated.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "truncated"),
        Case(arguments: ["run", "--model", "resnet32:channels=1", "--weights", "w.safetensors", "--input", "io.safetensors",
                         "--output", "out.safetensors"], message: "does not match the model"),
        Case(arguments: ["run", "--model", "resnet20:channels=3", "--weights", "w.safetensors", "--input", "channels3.safetensors",
                         "--output", "out.safetensors"], message: "conv1.weight: file has [16, 1, 3, 3], model needs [16, 3, 3, 3]"),
        // Input files.
        Case(arguments: run + ["--input", "missing.safetensors"], message: "does not exist"),
        Case(arguments: run + ["--input", "noinput.safetensors"], message: "needs a tensor 'input'"),
        Case(arguments: run + ["--input", "rank3.safetensors"], message: "found [2, 1, 28]"),
        Case(arguments: run + ["--input", "int.safetensors"], message: "holds integers"),
        Case(arguments: run + ["--input", "nan.safetensors"], message: "is nan; inputs must be finite"),
        Case(arguments: run + ["--input", "inf.safetensors"], message: "is inf; inputs must be finite"),
        Case(arguments: run + ["--input", "empty.safetensors"], message: "must have positive dimensions"),
        Case(arguments: run + ["--input", "channels3.safetensors"], message: "channels"),
        Case(arguments: run + ["--input", "badlabel.safetensors", "--mode", "train"], message: "label 30 is outside [0, 10)"),
        Case(arguments: run + ["--input", "negativelabel.safetensors", "--mode", "train"], message: "label -1 is outside"),
        Case(arguments: run + ["--input", "fewlabels.safetensors", "--mode", "train"], message: "needs 2 labels"),
        Case(arguments: run + ["--input", "nolabels.safetensors", "--mode", "train"], message: "needs a tensor 'labels'"),
        Case(arguments: run + ["--input", "io.safetensors", "--mode", "bogus"], message: "--mode must be eval or train"),
        Case(arguments: run + ["--input", "io.safetensors", "--device", "99"], message: "no OpenCL device has index 99"),
        Case(arguments: run + ["--input", "io.safetensors", "--device", "no-such-gpu"], message: "no OpenCL device matches"),
        Case(arguments: ["run", "--model", model, "--weights", "w.safetensors", "--input", "io.safetensors", "--output",
                         "nofolder/out.safetensors"], message: "nofolder", absent: ["nofolder"]),
        // Training: data, options, checkpoints.
        Case(arguments: ["train", "--data", "fashion-mnist:nofolder", "--output", "run"], message: "no train-images-idx3-ubyte"),
        Case(arguments: ["train", "--data", "fashion-mnist:half", "--output", "run"], message: "not valid gzip data"),
        Case(arguments: ["train", "--data", "cifar10:cifar", "--output", "run"], message: "is truncated"),
        Case(arguments: ["train", "--data", "imagenet:/data", "--output", "run"], message: "unknown data set"),
        Case(arguments: ["train", "--model", "nosuch", "--output", "run"], message: "unknown model"),
        Case(arguments: ["train", "--batch-size", "0", "--output", "run"], message: "must be positive"),
        Case(arguments: ["train", "--lr=-1", "--output", "run"], message: "learning rate must be positive"),
        Case(arguments: ["train", "--lr", "nan", "--output", "run"], message: "learning rate must be positive, not nan"),
        Case(arguments: ["train", "--momentum", "1.5", "--output", "run"], message: "momentum must be in [0, 1)"),
        Case(arguments: ["train", "--schedule", "bogus", "--output", "run"], message: "unknown schedule"),
        Case(arguments: ["train", "--label-smoothing", "1.5", "--output", "run"], message: "label smoothing must be in [0, 1)"),
        Case(arguments: ["train", "--stochastic-depth", "1", "--output", "run"], message: "stochastic_depth=1.0"),
        Case(arguments: ["train", "--on-divergence", "ignore", "--output", "run"], message: "--on-divergence must be stop or skip"),
        Case(arguments: ["train", "--max-steps", "0", "--output", "run"], message: "--max-steps must be positive"),
        Case(arguments: ["train", "--checkpoint-every=-3", "--output", "run"], message: "--checkpoint-every"),
        Case(arguments: ["train", "--train-subset", "0", "--output", "run"], message: "fewer than one batch"),
        Case(arguments: ["train", "--resume", "--output", "run"], message: "--resume: there is no"),
        Case(arguments: ["train", "--resume", "--output", "weightsonly"], message: "is a weights file, not a CLNet checkpoint",
             absent: ["weightsonly/metrics.jsonl", "weightsonly/model.safetensors"]),
        Case(arguments: ["train", "--resume", "--output", "format99"], message: "checkpoint of format 99",
             absent: ["format99/metrics.jsonl", "format99/model.safetensors"]),
        Case(arguments: ["train", "--device", "99", "--output", "run"], message: "no OpenCL device has index 99"),
        Case(arguments: ["train", "--teacher", "resnet20", "--output", "run"], message: "must be SPEC:WEIGHTS.safetensors"),
        Case(arguments: ["train", "--teacher", "resnet32:w.safetensors", "--output", "run"], message: "does not match the model"),
        // Export.
        Case(arguments: ["export", "--model", model, "--weights", "w.safetensors", "--output", "out.safetensors"],
             message: "nothing to export: give --fold-bn"),
        Case(arguments: ["export", "--model", "resnet32:channels=1", "--weights", "w.safetensors", "--fold-bn", "--output",
                         "out.safetensors"], message: "does not match the model"),
        Case(arguments: ["export", "--model", "preact_resnet18", "--weights", "w.safetensors", "--rm", "--output", "out.safetensors"],
             message: "cannot remove the residual connection at layer1.0.add: the addition has no ReLU"),
        Case(arguments: ["export", "--model", "resnet50", "--weights", "w.safetensors", "--rm", "--output", "out.safetensors"],
             message: "a bottleneck block has three convolutions"),
        Case(arguments: ["train", "--weights", "missing.safetensors", "--output", "run"], message: "--weights: there is no file"),
        Case(arguments: ["train", "--model", "resnet20:mid=4.4", "--output", "run"], message: "mid gives 2 block widths"),
        Case(arguments: ["train", "--devices", "0,99", "--output", "run"], message: "no OpenCL device has index 99"),
        Case(arguments: ["train", "--devices", "0,0", "--batch-size", "15", "--output", "run"], message: "must divide by the 2 replicas"),
        Case(arguments: ["train", "--devices", "0,0", "--on-divergence", "skip", "--output", "run"], message: "runs on one device"),
        Case(arguments: ["train", "--sync-bn", "--output", "run"], message: "--sync-bn synchronises batch norm across MPI ranks"),
        // Pruning and receptive fields.
        Case(arguments: ["prune", "--model", model, "--weights", "w.safetensors", "--fraction", "1", "--output", "out.safetensors"],
             message: "--fraction must be in [0, 1)"),
        Case(arguments: ["prune", "--model", model, "--weights", "w.safetensors", "--criterion", "random", "--output", "out.safetensors"],
             message: "--criterion must be l1 or taylor"),
        Case(arguments: ["prune", "--model", "densenet40_12", "--weights", "w.safetensors", "--output", "out.safetensors"],
             message: "has no convolution inside a residual block to prune"),
        Case(arguments: ["prune", "--model", "preact_resnet18", "--weights", "w.safetensors", "--output", "out.safetensors"],
             message: "clnet prune handles the ResNets"),
        Case(arguments: ["prune", "--model", "resnet32", "--weights", "w.safetensors", "--output", "out.safetensors"],
             message: "does not match the model"),
        Case(arguments: ["erf", "--model", model, "--images", "0", "--output", "e.png"], message: "--images must be 1 to 1024", absent: ["e.png"]),
        Case(arguments: ["erf", "--model", model, "--layer", "nosuch", "--images", "1", "--output", "e.png"],
             message: "no feature map named 'nosuch'", absent: ["e.png"]),
        // Evaluation.
        Case(arguments: ["eval", "--model", model, "--weights", "missing.safetensors"], message: "does not exist"),
        Case(arguments: ["eval", "--model", "resnet32:channels=1", "--weights", "w.safetensors"], message: "does not match the model"),
        Case(arguments: ["eval", "--model", model, "--weights", "w.safetensors", "--data", "mnist:nofolder"],
             message: "give the folder that holds the IDX files"),
        Case(arguments: ["eval", "--model", model, "--weights", "w.safetensors", "--batch-size", "0"],
             message: "--batch-size must be positive"),
        // Environment.
        Case(arguments: ["compile"], environment: ["CLNET_FAULT": "launch:3"], message: "CLNET_FAULT='launch:3'"),
        Case(arguments: ["compile"], environment: ["CLNET_DEVICE": "99"], message: "no OpenCL device has index 99"),
        Case(arguments: ["train", "--max-steps", "2", "--train-subset", "256", "--test-subset", "100", "--output", "run"],
             environment: ["CLNET_FAULT": "enqueue:40"], message: "injected by CLNET_FAULT enqueue"),
        // The benchmark.
        Case(tool: "clnet-bench", arguments: ["model", "--queues", "0"], message: "--queues takes counts from 1 to 16", exitCode: 2),
        Case(tool: "clnet-bench", arguments: ["model", "--mode", "bogus"], message: "--mode must be train or infer", exitCode: 2),
        Case(tool: "clnet-bench", arguments: ["model", "--model", "nosuch"], message: "unknown model"),
        Case(tool: "clnet-bench", arguments: ["model", "--model", "resnet50", "--batch", "100000"],
             message: "of device memory"),
    ]

    /// The files the cases read, made once per test run in a fresh folder.
    static let fixtures: Result<URL, any Error> = Result {
        let dir = try temporaryDirectory("bad-input")
        func file(_ name: String, _ tensors: [(name: String, value: SafeTensors.Value)]) throws {
            try SafeTensors.write(tensors, to: dir.appendingPathComponent(name))
        }
        let (graph, _) = try ModelSpec.graph(model, batch: 2, size: 28)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: false)
        try executor.initialize(seed: 3)
        try executor.save(to: dir.appendingPathComponent("w.safetensors"))
        var x = [Float](repeating: 0.5, count: 2 * 784)
        let input = SafeTensors.Value.float32(x, shape: [2, 1, 28, 28])
        try file("io.safetensors", [("input", input), ("labels", .int64([1, 3], shape: [2]))])
        try file("noinput.safetensors", [("x", input)])
        try file("rank3.safetensors", [("input", .float32(Array(x[0..<56]), shape: [2, 1, 28]))])
        try file("int.safetensors", [("input", .int64([Int64](repeating: 0, count: 2 * 784), shape: [2, 1, 28, 28]))])
        x[88] = .nan
        try file("nan.safetensors", [("input", .float32(x, shape: [2, 1, 28, 28]))])
        x[88] = .infinity
        try file("inf.safetensors", [("input", .float32(x, shape: [2, 1, 28, 28]))])
        try file("empty.safetensors", [("input", .float32([], shape: [0, 1, 28, 28]))])
        try file("channels3.safetensors", [("input", .float32([Float](repeating: 0, count: 2 * 3 * 784), shape: [2, 3, 28, 28]))])
        try file("badlabel.safetensors", [("input", input), ("labels", .int64([1, 30], shape: [2]))])
        try file("negativelabel.safetensors", [("input", input), ("labels", .int64([-1, 3], shape: [2]))])
        try file("fewlabels.safetensors", [("input", input), ("labels", .int64([1], shape: [1]))])
        try file("nolabels.safetensors", [("input", input)])
        try Data("this is not a safetensors file at all".utf8).write(to: dir.appendingPathComponent("garbage.safetensors"))
        let weights = try Data(contentsOf: dir.appendingPathComponent("w.safetensors"))
        try weights.prefix(300).write(to: dir.appendingPathComponent("truncated.safetensors"))
        // A Fashion-MNIST folder whose training images stop half-way, and a CIFAR-10 folder with a short batch.
        let half = dir.appendingPathComponent("half")
        try FileManager.default.createDirectory(at: half, withIntermediateDirectories: true)
        for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: DataSource.fashionMNISTDirectory).appendingPathComponent(name))
            try (name.hasPrefix("train-images") ? data.prefix(data.count / 2) : data).write(to: half.appendingPathComponent(name))
        }
        let cifar = dir.appendingPathComponent("cifar")
        try FileManager.default.createDirectory(at: cifar, withIntermediateDirectories: true)
        for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
            try Data(count: name == "data_batch_2" ? 3073 * 10 + 17 : 3073 * 10).write(to: cifar.appendingPathComponent("\(name).bin"))
        }
        // A weights file where a checkpoint should be, and a checkpoint of a future format.
        for folder in ["weightsonly", "format99"] {
            try FileManager.default.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        try weights.write(to: dir.appendingPathComponent("weightsonly/checkpoint.safetensors"))
        let state = #"{"version":99,"clnetVersion":"9.9.9","step":1,"modelSpec":"resnet20"}"#
        try SafeTensors.write([("conv1.weight", .float32([0], shape: [1]))], to: dir.appendingPathComponent("format99/checkpoint.safetensors"),
                              metadata: ["clnet.checkpoint": state])
        return dir
    }

    @Test(arguments: cases)
    func failsCleanly(_ c: Case) throws {
        let dir = try Self.fixtures.get()
        let result = try runTool(c.tool, c.arguments, environment: c.environment, in: dir)
        let text = result.stderr
        #expect(result.status == c.exitCode, "exit \(result.status): \(text)")
        #expect(text.contains(c.message), "message: \(text)")
        #expect(text.hasSuffix("\n") && text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).count == 1,
                "not one line: \(text)")
        #expect(text.contains("error:"), "\(text)")
        for path in c.absent {
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent(path).path), "\(path) was left behind")
        }
    }
}
