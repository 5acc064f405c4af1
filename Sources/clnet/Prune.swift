import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Removes a fraction of each residual block's inner filters and writes the smaller model.
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prune filters inside residual blocks (L1 norm or first-order Taylor) and write the smaller model.",
        discussion: """
            Each convolution inside a residual block (a basic block's first, a bottleneck's first two) loses \
            --fraction of its filters, those with the lowest importance: --criterion l1 ranks by the L1 norm of \
            the weights (Li et al. 2017), taylor by (sum of gradient x value of the filter's batch-norm scale and \
            shift)^2 averaged over --batches training minibatches (Molchanov et al. 2019). The channels that \
            residual additions join are kept, so every addition keeps its shape. The result is the model with \
            mid= widths, which OUT records; fine-tune it with `clnet train --weights OUT`.
            """)

    @Option(help: "The model the weights are for (a name or specification; default: the model --weights records).")
    var model: String?

    @Option(help: "The trained weights (or a checkpoint).")
    var weights: String

    @Option(help: "The fraction of each pruned layer's filters to remove, in [0, 1).")
    var fraction = 0.3

    @Option(help: "l1 or taylor.")
    var criterion = "l1"

    @Option(help: "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR or cifar100:DIR: sets channels and classes, and feeds taylor.")
    var data = "fashion-mnist"

    @Option(help: "Training minibatches the Taylor importance averages over.")
    var batches = 16

    @Option(help: "Images per minibatch for the Taylor importance.")
    var batchSize = 64

    @Option(help: "Where to write the pruned weights (written atomically).")
    var output: String

    @OptionGroup var device: DeviceOption

    func run() throws {
        do {
            guard let how = PruningCriterion(rawValue: criterion) else {
                throw CLNetError.invalidArgument("--criterion must be l1 or taylor, not '\(criterion)'")
            }
            guard (0..<1).contains(fraction) else { throw CLNetError.invalidArgument("--fraction must be in [0, 1), not \(fraction)") }
            guard (1...100_000).contains(batches), (1...100_000).contains(batchSize) else {
                throw CLNetError.invalidArgument("--batches and --batch-size must be positive")
            }
            let source = try DataSource(parsing: data)
            let train = try source.load(train: true)
            let weightsFile = try LoadedWeights(weights)
            let spec = ModelSpec.filling(try weightsFile.model(model), ["channels": "\(train.channels)", "classes": "\(train.classes)"])
            let graph = try ModelSpec.graph(spec, batch: 1, size: train.height, loss: false).graph
            guard !graph.prunableConvolutions.isEmpty else {
                throw CLNetError.invalidArgument("\(spec) has no convolution inside a residual block to prune")
            }
            // The model must say its blocks' widths (mid=), or the pruned one could not be built.
            let current = graph.prunedBlockWidths(PruningPlan(keep: Dictionary(uniqueKeysWithValues: graph.prunableConvolutions.map {
                (graph.nodes[$0.node].name, Array(0..<graph.shape(of: graph.nodes[$0.node].output).c))
            })))
            do {
                _ = try ModelSpec.graph(ModelSpec.filling(spec, ["mid": current.map { "\($0)" }.joined(separator: ".")]), batch: 1,
                                        size: train.height, loss: false)
            } catch {
                throw CLNetError.invalidArgument("clnet prune handles the ResNets and CIFAR ResNets, whose block widths mid= sets; \(error)")
            }
            let values = Dictionary(uniqueKeysWithValues: try graph.parameterValues(from: weightsFile.file, ignoring: "optimizer."))
            let importance: [String: [Double]]
            switch how {
            case .l1:
                importance = try graph.l1Importance(values)
            case .taylor:
                importance = try taylor(spec, values, train, source, weightsFile.info)
            }
            let plan = try graph.pruningPlan(fraction: fraction, importance: importance)
            let widths = graph.prunedBlockWidths(plan)
            let prunedSpec = ModelSpec.filling(spec, ["mid": widths.map { "\($0)" }.joined(separator: ".")])
            let pruned = try ModelSpec.graph(prunedSpec, batch: 1, size: train.height, loss: false).graph
            let prunedValues = try graph.prunedParameters(plan, values, pruned: pruned)
            let tensors = pruned.parameters.map { p in (name: p.name, value: SafeTensors.Value.float32(prunedValues[p.name]!, shape: p.shape.dims)) }
            let info = weightsFile.info?.rewritten(as: prunedSpec) ?? WeightsInfo(model: prunedSpec, imageSize: train.height, dataset: data)
            try SafeTensors.write(tensors, to: URL(fileURLWithPath: output), metadata: info.metadata)
            let filters = graph.prunableConvolutions.map { graph.shape(of: graph.nodes[$0.node].output).c }.reduce(0, +)
            let kept = plan.keep.values.map(\.count).reduce(0, +)
            print("""
                pruned \(filters - kept) of \(filters) filters in \(plan.keep.count) convolutions by \(how.rawValue)
                parameters \(graph.trainableParameterCount) -> \(pruned.trainableParameterCount) \
                (\(format(Double(pruned.trainableParameterCount) / Double(graph.trainableParameterCount) * 100, 1))%), \
                MFLOPs per image \(format(graph.forwardFLOPs / 1e6, 1)) -> \(format(pruned.forwardFLOPs / 1e6, 1)) \
                (\(format(pruned.forwardFLOPs / graph.forwardFLOPs * 100, 1))%)
                wrote \(output) for \(prunedSpec), which it records: fine-tune it with `clnet train --weights \(output)`
                """)
        } catch {
            throw fail(error)
        }
    }

    /// Taylor importance averaged over `batches` training minibatches, with gradients from the
    /// device (batch norm in training mode, as the scores are meant to be taken during training).
    private func taylor(_ spec: String, _ values: [String: [Float]], _ train: ImageDataset, _ source: DataSource,
                        _ info: WeightsInfo?) throws -> [String: [Double]] {
        let batch = min(batchSize, train.count)
        let graph = try ModelSpec.graph(spec, batch: batch, size: train.height).graph
        let dev = try device.select()
        let executor = try Executor(graph: graph, context: try Context(device: dev), training: true)
        for (name, v) in values { try executor.setParameter(name, v) }
        // The normalisation the weights were trained with, else the training split's.
        var stats = train.channelStatistics()
        if let mean = info?.mean, let std = info?.std, mean.count == train.channels, std.count == train.channels { stats = (mean, std) }
        let loader = try BatchLoader(data: train, batchSize: batch, preprocessing: Preprocessing(mean: stats.mean, std: stats.std),
                                     training: true, seed: 0)
        var total: [String: [Double]] = [:]
        let owners = Set(graph.prunableConvolutions.flatMap { p in ([p.node] + p.path).flatMap { graph.nodes[$0].parameters } })
        let count = min(batches, loader.batchesPerEpoch)
        for i in 0..<count {
            let b = try loader.batch(epoch: 0, index: i)
            _ = try executor.forward(["input": b.inputs], labels: b.labels)
            try executor.backward()
            var gradients: [String: [Float]] = [:]
            for k in owners where graph.parameters[k].trainable {
                gradients[graph.parameters[k].name] = try executor.gradient(graph.parameters[k].name)
            }
            // Training-mode batch norm moves the running statistics; the scores use the file's values.
            for (name, s) in try graph.taylorImportance(values: values, gradients: gradients) {
                total[name] = zip(total[name] ?? [Double](repeating: 0, count: s.count), s).map { $0 + $1 / Double(count) }
            }
        }
        return total
    }
}
