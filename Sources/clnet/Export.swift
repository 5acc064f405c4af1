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
        abstract: "Rewrite trained weights for inference (--fold-bn: fold batch norms; --rm: remove residual connections).",
        discussion: """
            --fold-bn: every convolution followed by batch norm becomes one convolution with a bias, using the \
            norm's running statistics; the model is then the original specification with fold_bn=1 \
            (e.g. resnet18:fold_bn=1). --rm (RMNet, Meng et al.): also rewrites every ReLU basic block as two \
            plain convolutions, reserving the block's input in extra channels of the first and merging it in \
            the second, so the network has no residual connection left; the model is then the specification \
            with rm=1 (e.g. resnet20:rm=1). Logits agree with the original's in eval mode.
            """)

    @Option(help: "The model the weights are for (a name or specification; default: the model --weights records).")
    var model: String?

    @Option(help: "The trained weights (or a checkpoint).")
    var weights: String

    @Flag(help: "Fold each convolution's batch norm into the convolution.")
    var foldBn = false

    @Flag(name: .customLong("rm"), help: "Fold batch norms and remove every residual connection (basic ReLU blocks).")
    var removeResiduals = false

    @Option(help: "Where to write the rewritten weights (written atomically).")
    var output: String

    func run() throws {
        do {
            guard foldBn || removeResiduals else { throw CLNetError.invalidArgument("nothing to export: give --fold-bn or --rm") }
            let weightsFile = try LoadedWeights(weights)
            let model = try weightsFile.model(self.model)
            let size = ModelSpec.defaultSize(model)
            let graph = try ModelSpec.graph(model, batch: 1, size: size, loss: false).graph
            // The rewrite first: a model it cannot handle is refused before the weights are read.
            let plain = removeResiduals ? try graph.removingResiduals() : nil
            let values = Dictionary(uniqueKeysWithValues: try graph.parameterValues(from: weightsFile.file, ignoring: "optimizer."))
            let target: Graph, rewritten: [String: [Float]], spec: String, summary: String
            if let plain {
                (target, rewritten) = (plain.graph, try graph.removeResidualParameters(plain, values))
                spec = ModelSpec.filling(model, ["rm": "1"])
                summary = "folded \(plain.fold.pairs.count) batch norms and removed \(plain.blocks.count) residual connections"
            } else {
                let fold = try graph.foldingBatchNorms()
                (target, rewritten) = (fold.graph, try graph.foldBatchNormParameters(fold, values))
                spec = ModelSpec.filling(model, ["fold_bn": "1"])
                summary = "folded \(fold.pairs.count) batch norms into their convolutions"
            }
            let tensors = target.parameters.map { p in (name: p.name, value: SafeTensors.Value.float32(rewritten[p.name]!, shape: p.shape.dims)) }
            // The output records the rewritten model, and keeps what the input said of its data.
            let info = weightsFile.info?.rewritten(as: spec) ?? WeightsInfo(model: spec)
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
}
