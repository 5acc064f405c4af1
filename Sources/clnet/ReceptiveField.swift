import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Draws a model's effective receptive field (Luo et al. 2016) as a PNG heat map.
struct ERF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "erf",
        abstract: "Draw the effective receptive field of a layer's centre unit (Luo et al. 2016) as a PNG heat map.",
        discussion: """
            The map is the mean over --images test images of |d(centre unit, all channels summed) / d(input)|, \
            summed over the input's channels, computed by the CPU reference in Double in inference mode. \
            It prints the radius around the map's centre of mass that holds 68% of its mass, and the radius \
            of the theoretical field (every pixel with any gradient), clipped to the image. Without --weights \
            the model is initialised from --seed, as `clnet train` starts it.
            """)

    @Option(help: "A model name or specification; channels and classes come from the data (default: the model --weights records).")
    var model: String?

    @Option(help: "Trained weights or a checkpoint (default: the initialisation of --seed).")
    var weights: String?

    @Option(help: "The node whose centre unit to explain (default: the last feature map, what the global pooling reads).")
    var layer: String?

    @Option(help: "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR or cifar100:DIR (the images come from its test split).")
    var data = "fashion-mnist"

    @Option(help: "How many test images to average over.")
    var images = 32

    @Option(help: "Seed of the initialisation when there are no --weights.")
    var seed: UInt64 = 0

    @Option(help: "Pixels per input pixel in the picture.")
    var scale = 8

    @Option(help: "Where to write the PNG (written atomically).")
    var output: String

    @OptionGroup var device: DeviceOption

    func run() throws {
        do {
            guard (1...1024).contains(images) else { throw CLNetError.invalidArgument("--images must be 1 to 1024, not \(images)") }
            guard (1...64).contains(scale) else { throw CLNetError.invalidArgument("--scale must be 1 to 64, not \(scale)") }
            guard output.lowercased().hasSuffix(".png") else {
                throw CLNetError.invalidArgument("--output must name a .png file, not \(output)")
            }
            let source = try DataSource(parsing: data)
            let train = try source.load(train: true)
            let test = try source.load(train: false).prefix(images)
            let weightsFile = try weights.map { try LoadedWeights($0) }
            guard let chosen = try weightsFile.map({ try $0.model(model) }) ?? model else {
                throw CLNetError.invalidArgument("give --model, or --weights that record their model")
            }
            // The normalisation the weights were trained with, else the training split's, as `clnet train` uses.
            var stats = train.channelStatistics()
            if let info = weightsFile?.info, let mean = info.mean, let std = info.std, mean.count == test.channels, std.count == test.channels {
                stats = (mean, std)
            }
            let spec = ModelSpec.filling(chosen, ["channels": "\(test.channels)", "classes": "\(test.classes)"])
            let (graph, _) = try ModelSpec.graph(spec, batch: test.count, size: test.height, loss: false)
            var parameters: [String: [Float]]
            if let weightsFile {
                parameters = Dictionary(uniqueKeysWithValues: try graph.parameterValues(from: weightsFile.file, ignoring: "optimizer."))
            } else {
                let dev = try device.select()
                let executor = try Executor(graph: graph, context: try Context(device: dev), training: false, queues: 1)
                // The same stream as `clnet train --seed`, so the picture is of the run's start.
                try executor.initialize(seed: Trainer.initializationSeed(seed))
                parameters = [:]
                for p in graph.parameters { parameters[p.name] = try executor.parameter(p.name) }
            }
            let loader = try BatchLoader(data: test, batchSize: test.count,
                                         preprocessing: Preprocessing(mean: stats.mean, std: stats.std), training: false, seed: 0)
            let start = ContinuousClock.now
            let field = try EffectiveReceptiveField(graph: graph, parameters: parameters, images: try loader.batch(epoch: 0, index: 0).inputs,
                                                    layer: layer)
            try AtomicFile.write(try field.png(scale: scale), to: output)
            print("""
                \(spec)\(weights.map { " with \($0)" } ?? " at initialisation (seed \(seed))"): layer \(field.layer), \
                unit (\(field.unitRow), \(field.unitColumn)), \(test.count) images of \(field.height)x\(field.width)
                effective field: 68% of the mass within \(format(field.radius68, 2)) px of (\(format(field.centreRow, 1)), \
                \(format(field.centreColumn, 1))); theoretical field radius \(format(field.supportRadius, 1)) px (clipped to the image)
                wrote \(output) in \(format(seconds(since: start), 1)) s
                """)
        } catch {
            throw fail(error)
        }
    }
}
