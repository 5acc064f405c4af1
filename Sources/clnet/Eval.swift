import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate saved weights (or a checkpoint) on a data set's test split: loss, top-1 and top-5 accuracy.")

    @Option(help: "A model name or specification; channels and classes come from the data.")
    var model: String

    @Option(help: "Weights or a checkpoint in safetensors.")
    var weights: String

    @Option(help: "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, or imagefolder:DIR (its val/ split).")
    var data = "fashion-mnist"

    @OptionGroup var image: ImageOptions

    @Option(help: "Images per batch.")
    var batchSize = 500

    @Option(help: "Evaluate the first N test images only (of an image folder: N spread evenly over val/).")
    var subset: Int?

    @OptionGroup var device: DeviceOption

    @Flag(inversion: .prefixedNo, help: "Normalise with the training split's statistics, as `clnet train` does (else the test split's own).")
    var trainStatistics = true

    func run() throws {
        do {
            guard batchSize > 0 else { throw CLNetError.invalidArgument("--batch-size must be positive, not \(batchSize)") }
            if let subset, subset <= 0 { throw CLNetError.invalidArgument("--subset must be positive, not \(subset)") }
            let source = try DataSource(parsing: data)
            if case let .imageFolder(root) = source { return try folder(root) }
            var test = try source.load(train: false)
            if let subset { test = test.prefix(subset) }
            let stats = trainStatistics ? try source.load(train: true).channelStatistics() : test.channelStatistics()
            let spec = ModelSpec.filling(model, ["channels": "\(test.channels)", "classes": "\(test.classes)"])
            let batch = min(batchSize, test.count)
            let (graph, logits) = try ModelSpec.graph(spec, batch: batch, size: test.height, loss: false)
            let dev = try device.select()
            let executor = try Executor(graph: graph, context: try Context(device: dev), training: false, keep: [logits])
            try executor.load(try SafeTensors(contentsOf: URL(fileURLWithPath: weights)), ignoring: "optimizer.")
            let loader = try BatchLoader(data: test, batchSize: batch,
                                         preprocessing: Preprocessing(mean: stats.mean, std: stats.std), training: false, seed: 0)
            let start = ContinuousClock.now
            let e = try Trainer.evaluate(executor, logits: logits, loader: loader)
            print("\(spec) on \(data) (\(e.samples) test images): loss \(format(e.loss, 4)), top-1 \(format(e.top1 * 100, 2))%, "
                  + "top-5 \(format(e.top5 * 100, 2))% in \(format(seconds(since: start), 1)) s")
        } catch {
            throw fail(error)
        }
    }

    /// The val/ split of an image folder, with torchvision's evaluation transform.
    private func folder(_ root: String) throws {
        let folder = try ImageFolder(root: root)
        let list = subset.map { folder.validation.subset($0) } ?? folder.validation
        let samples = ImageFolderSamples(images: list, transform: try image.evaluation())
        let spec = ModelSpec.filling(model, ["channels": "3", "classes": "\(folder.classes.count)"])
        let batch = min(batchSize, samples.count)
        let (graph, logits) = try ModelSpec.graph(spec, batch: batch, size: samples.height, loss: false)
        let executor = try Executor(graph: graph, context: try Context(device: try device.select()), training: false, keep: [logits])
        try executor.load(try SafeTensors(contentsOf: URL(fileURLWithPath: weights)), ignoring: "optimizer.")
        let loader = try BatchLoader(source: samples, batchSize: batch, training: false, seed: 0)
        let start = ContinuousClock.now
        let e = try Trainer.evaluate(executor, logits: logits, loader: loader)
        print("\(spec) on \(data) (\(e.samples) images of val/): loss \(format(e.loss, 4)), top-1 \(format(e.top1 * 100, 2))%, "
              + "top-5 \(format(e.top5 * 100, 2))% in \(format(seconds(since: start), 1)) s")
    }
}
