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
        abstract: "Rewrite trained weights for inference (--fold-bn: fold each convolution's batch norm into it).",
        discussion: """
            --fold-bn: every convolution followed by batch norm becomes one convolution with a bias, using the \
            norm's running statistics; the model is then the original specification with fold_bn=1 \
            (e.g. resnet18:fold_bn=1). Logits agree with the original's in eval mode.
            """)

    @Option(help: "The model the weights are for (a name or specification).")
    var model: String

    @Option(help: "The trained weights (or a checkpoint).")
    var weights: String

    @Flag(help: "Fold each convolution's batch norm into the convolution.")
    var foldBn = false

    @Option(help: "Where to write the rewritten weights (written atomically).")
    var output: String

    func run() throws {
        do {
            guard foldBn else { throw CLNetError.invalidArgument("nothing to export: give --fold-bn") }
            let size = ModelSpec.defaultSize(model)
            let graph = try ModelSpec.graph(model, batch: 1, size: size, loss: false).graph
            let file = try SafeTensors(contentsOf: URL(fileURLWithPath: weights))
            let values = Dictionary(uniqueKeysWithValues: try graph.parameterValues(from: file, ignoring: "optimizer."))
            let fold = try graph.foldingBatchNorms()
            let folded = try graph.foldBatchNormParameters(fold, values)
            let tensors = fold.graph.parameters.map { p in (name: p.name, value: SafeTensors.Value.float32(folded[p.name]!, shape: p.shape.dims)) }
            try SafeTensors.write(tensors, to: URL(fileURLWithPath: output))
            let spec = ModelSpec.filling(model, ["fold_bn": "1"])
            print("""
                folded \(fold.pairs.count) batch norms into their convolutions: \(graph.parameters.count) tensors -> \
                \(fold.graph.parameters.count), \(graph.nodes.count) nodes -> \(fold.graph.nodes.count)
                wrote \(output); use it with --model \(spec)
                """)
        } catch {
            throw fail(error)
        }
    }
}
