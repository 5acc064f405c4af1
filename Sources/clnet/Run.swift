import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model on inputs from a safetensors file and write what it computes, to check CLNet against PyTorch.",
        discussion: """
            The input file holds `input` (F32, NCHW) and, for --mode train, `labels` (I64 or I32). Eval mode writes \
            `logits`. Train mode runs one forward and backward with batch statistics and mean cross-entropy and writes \
            `logits`, `loss` (shape []), each batch norm's updated running statistics as `state.<name>`, and with --grads \
            each parameter's gradient as `grad.<name>`.
            """)

    @Option(help: "A model name or specification (see `clnet models`; default: the model --weights records).")
    var model: String?

    @Option(help: "Weights in safetensors, with torchvision's names.")
    var weights: String

    @Option(help: "The input safetensors file.")
    var input: String

    @Option(help: "Where to write the results (written atomically).")
    var output: String

    @Option(help: "eval or train.")
    var mode = "eval"

    @Flag(help: "In train mode, also write every parameter's gradient.")
    var grads = false

    @OptionGroup var device: DeviceOption

    @Option(help: "How activations are stored: fp32, fp16 or bf16 (arithmetic stays float32).")
    var precision: Precision = .fp32

    func run() throws {
        do {
            try execute()
        } catch {
            throw fail(error)
        }
    }

    private func execute() throws {
        guard mode == "eval" || mode == "train" else { throw CLNetError.invalidArgument("--mode must be eval or train, not '\(mode)'") }
        let training = mode == "train"
        let io = try SafeTensors(contentsOf: URL(fileURLWithPath: input))
        guard let entry = io.entries["input"], entry.shape.count == 4, entry.shape[2] == entry.shape[3] else {
            throw CLNetError.invalidArgument("\(input): needs a tensor 'input' of shape [N, C, H, H], found \(io.entries["input"].map { "\($0.shape)" } ?? "none")")
        }
        let pixels = try io.floats("input")
        var labels: [Int] = []
        if training {
            guard io.entries["labels"] != nil else { throw CLNetError.invalidArgument("\(input): train mode needs a tensor 'labels'") }
            labels = try io.integers("labels").map { Int($0) }
        }
        let weightsFile = try LoadedWeights(weights)
        let model = try weightsFile.model(self.model)
        let (graph, logits) = try ModelSpec.graph(model, batch: entry.shape[0], size: entry.shape[2], loss: training)
        let expected = graph.shape(of: graph.inputs[0].value)
        guard expected.dims == entry.shape else {
            throw CLNetError.invalidShape(operation: "clnet run", message: "\(model) takes input \(expected) but \(input) holds \(entry.shape)")
        }
        let file = weightsFile.file
        var out: [(name: String, value: SafeTensors.Value)] = []
        let logitShape = graph.shape(of: logits).dims
        if device.name == "cpu" {
            var params: [String: [Double]] = [:]
            // The device path checks names and shapes; the CPU path does the same through an executor-free check.
            for p in graph.parameters {
                guard let e = file.entries[p.name], e.shape == p.shape.dims else {
                    throw CLNetError.invalidShape(operation: "loading weights", message: "\(p.name): file has \(file.entries[p.name].map { "\($0.shape)" } ?? "nothing"), model needs \(p.shape)")
                }
                params[p.name] = try file.floats(p.name).map(Double.init)
            }
            var reference = try ReferenceExecutor(graph: graph, parameters: params)
            reference.activationStorage = precision
            let values = try reference.forward(["input": pixels.map(Double.init)], labels: labels, training: training)
            out.append(("logits", .float32(values[logits.index].map(Float.init), shape: logitShape)))
            if training {
                let loss = values[graph.nodes[graph.lossNode!].output.index][0]
                out.append(("loss", .float32([Float(loss)], shape: [])))
                for p in graph.parameters where !p.trainable {
                    out.append(("state.\(p.name)", .float32(reference.parameters[p.name]!.map(Float.init), shape: p.shape.dims)))
                }
                if grads {
                    let g = try reference.backward(values: values, labels: labels)
                    for p in graph.parameters where p.trainable {
                        guard let grad = g.parameters[p.name] else { continue }
                        out.append(("grad.\(p.name)", .float32(grad.map(Float.init), shape: p.shape.dims)))
                    }
                }
            }
        } else {
            let dev = try device.select()
            let executor = try Executor(graph: graph, context: try Context(device: dev), training: training, keep: [logits], precision: precision)
            try executor.load(file)
            let reading = try executor.forward(["input": pixels], labels: labels)
            if training && grads { try executor.backward() }
            out.append(("logits", .float32(try executor.read(logits), shape: logitShape)))
            if training, let reading {
                out.append(("loss", .float32([try reading.value().loss], shape: [])))
                for p in graph.parameters where !p.trainable {
                    out.append(("state.\(p.name)", .float32(try executor.parameter(p.name), shape: p.shape.dims)))
                }
                if grads {
                    for p in graph.parameters where p.trainable {
                        out.append(("grad.\(p.name)", .float32(try executor.gradient(p.name), shape: p.shape.dims)))
                    }
                }
            }
        }
        try SafeTensors.write(out, to: URL(fileURLWithPath: output))
    }
}
