import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Rewrites trained weights for deployment. The result is a weights file for a model
/// specification that `clnet run`, `clnet eval` and the library take like any other.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite trained weights for inference (--fold-bn: fold batch norms; --reparam: merge branches; --rm: remove residual connections; --onnx: an ONNX model).",
        discussion: """
            --fold-bn: every convolution followed by batch norm becomes one convolution with a bias, using the \
            norm's running statistics; the model is then the original specification with fold_bn=1 \
            (e.g. resnet18:fold_bn=1). --reparam (RepVGG): every sum of branches that are linear in one input (a \
            convolution with its batch norm, a 1x1-then-3x3 cascade with its batch norm, a batch norm of the input, \
            the input) becomes one convolution with a bias; the model is then the specification with rep=1 \
            (e.g. repvgg_a0:rep=1). --rm (RMNet, Meng et al.): also rewrites every ReLU basic block as two \
            plain convolutions, reserving the block's input in extra channels of the first and merging it in \
            the second, so the network has no residual connection left; the model is then the specification \
            with rm=1 (e.g. resnet20:rm=1). Logits agree with the original's in eval mode. --onnx writes the \
            inference graph (after --fold-bn, --reparam or --rm, if given) as an ONNX model: input `input` [N, C, H, W] \
            float32 with a symbolic batch N, output `logits`, the weights as initializers under their \
            torchvision names, and the weights' record (model, normalisation, classes) in metadata_props.
            """)

    @Option(help: "The model the weights are for (a name or specification; default: the model --weights records).")
    var model: String?

    @Option(help: "The trained weights (or a checkpoint).")
    var weights: String

    @Flag(help: "Fold each convolution's batch norm into the convolution.")
    var foldBn = false

    @Flag(help: "Merge each sum of branches linear in one input (RepVGG's blocks) into one convolution with a bias.")
    var reparam = false

    @Flag(name: .customLong("rm"), help: "Fold batch norms and remove every residual connection (basic ReLU blocks).")
    var removeResiduals = false

    @Flag(help: "Write an ONNX model (opset --opset) instead of safetensors: the inference graph, with the weights as initializers.")
    var onnx = false

    @Option(help: "With --onnx: the ONNX opset (13 to 21).")
    var opset = 17

    @Option(help: "With --onnx: the fixed height and width of the input (default: the size the weights record, else the model's).")
    var imageSize: Int?

    @Flag(help: "With --onnx: run ONNX's checker and ONNX Runtime (Python's onnx and onnxruntime) on the model, against CLNet's logits on a random batch; nothing is written unless it passes.")
    var check = false

    @Option(help: "Where to write the result (written atomically).")
    var output: String

    @OptionGroup var device: DeviceOption

    func run() throws {
        do {
            guard foldBn || reparam || removeResiduals || onnx else {
                throw CLNetError.invalidArgument("nothing to export: give --fold-bn, --reparam, --rm or --onnx")
            }
            guard [foldBn, reparam, removeResiduals].filter({ $0 }).count <= 1 else {
                throw CLNetError.invalidArgument("--fold-bn, --reparam and --rm are separate rewrites: give one")
            }
            guard onnx || (imageSize == nil && !check && opset == 17) else {
                throw CLNetError.invalidArgument("--image-size, --opset and --check are for --onnx")
            }
            if let imageSize, imageSize <= 0 { throw CLNetError.invalidArgument("--image-size must be positive, not \(imageSize)") }
            let weightsFile = try LoadedWeights(weights)
            let model = try weightsFile.model(self.model)
            let size = imageSize ?? weightsFile.info?.imageSize ?? ModelSpec.defaultSize(model)
            let graph = try ModelSpec.graph(model, batch: 1, size: size, loss: false).graph
            // The rewrite first: a model it cannot handle is refused before the weights are read.
            let plain = removeResiduals ? try graph.removingResiduals() : nil
            let merged = reparam ? try graph.reparameterizingBranches() : nil
            if let merged, merged.merges.isEmpty {
                throw CLNetError.invalidArgument("--reparam: \(model) has no sum of branches linear in one input to merge")
            }
            let values = Dictionary(uniqueKeysWithValues: try graph.parameterValues(from: weightsFile.file, ignoring: "optimizer."))
            let target: Graph, rewritten: [String: [Float]], spec: String, summary: String
            if let plain {
                (target, rewritten) = (plain.graph, try graph.removeResidualParameters(plain, values))
                spec = ModelSpec.filling(model, ["rm": "1"])
                summary = "folded \(plain.fold.pairs.count) batch norms and removed \(plain.blocks.count) residual connections"
            } else if let merged {
                (target, rewritten) = (merged.graph, try graph.reparameterizeBranchParameters(merged, values))
                spec = ModelSpec.filling(model, ["rep": "1"])
                summary = "merged the branches of \(merged.merges.count) blocks into single convolutions"
            } else if foldBn {
                let fold = try graph.foldingBatchNorms()
                (target, rewritten) = (fold.graph, try graph.foldBatchNormParameters(fold, values))
                spec = ModelSpec.filling(model, ["fold_bn": "1"])
                summary = "folded \(fold.pairs.count) batch norms into their convolutions"
            } else {
                (target, rewritten, spec, summary) = (graph, values, model, "")
            }
            // The output records the rewritten model, and keeps what the input said of its data.
            var info = weightsFile.info?.rewritten(as: spec) ?? WeightsInfo(model: spec)
            if onnx {
                info.imageSize = size
                try writeONNX(spec: spec, size: size, values: rewritten, info: info, summary: summary)
                return
            }
            let tensors = target.parameters.map { p in (name: p.name, value: SafeTensors.Value.float32(rewritten[p.name]!, shape: p.shape.dims)) }
            try SafeTensors.write(tensors, to: URL(fileURLWithPath: output), metadata: info.metadata)
            print("""
                \(summary): \(graph.parameters.count) tensors -> \(target.parameters.count), \(graph.nodes.count) nodes -> \
                \(target.nodes.count), \(graph.trainableParameterCount) parameters -> \(target.trainableParameterCount)
                wrote \(output) for \(spec), which it records: use it with --weights alone
                """)
        } catch {
            throw fail(error)
        }
    }

    /// The ONNX model of `spec`, checked (with --check) in a temporary file before it is moved
    /// into place, so that a model that fails leaves nothing.
    private func writeONNX(spec: String, size: Int, values: [String: [Float]], info: WeightsInfo, summary: String) throws {
        let (graph, logits) = try ModelSpec.graph(spec, batch: 1, size: size, loss: false)
        let bytes = try ONNX.model(graph: graph, logits: logits, parameters: values, opset: opset, metadata: info.metadata)
        var checked = ""
        if check {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-onnx-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let trial = dir.appendingPathComponent("model.onnx").path
            try AtomicFile.write(bytes, to: trial)
            checked = "\n" + (try ONNXCheck.run(path: trial, spec: spec, size: size, parameters: values, device: try device.select()))
        }
        try AtomicFile.write(bytes, to: output)
        let x = graph.shape(of: graph.inputs[0].value), y = graph.shape(of: logits)
        print("""
            \(summary.isEmpty ? "" : summary + "; ")wrote \(output): ONNX opset \(opset), \(spec), input [N, \(x.c), \(x.h), \(x.w)], \
            logits [N, \(y.c)], \(graph.parameters.count) initializers, \(format(Double(bytes.count) / 1_048_576, 1)) MiB\(checked)
            """)
    }
}
