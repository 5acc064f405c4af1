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
        abstract: "Evaluate saved weights (or a checkpoint) on a data set's test split: loss, top-1 and top-5 accuracy.",
        discussion: """
            Weights written by CLNet say their model, input size and normalisation, so --weights is enough: the \
            inputs are normalised as the training run normalised them. --train-statistics / --no-train-statistics \
            override that with the statistics of the training split or of the test split itself.
            """)

    @Option(help: "A model name or specification; channels and classes come from the data (default: the model --weights records).")
    var model: String?

    @Option(help: "Weights or a checkpoint in safetensors.")
    var weights: String

    @Option(help: "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, or imagefolder:DIR (its val/ split).")
    var data = "fashion-mnist"

    @OptionGroup var image: ImageOptions

    @OptionGroup var taskOptions: TaskOptions

    @Option(help: "Images per batch.")
    var batchSize = 500

    @Option(help: "Evaluate the first N test images only (of an image folder: N spread evenly over val/).")
    var subset: Int?

    @OptionGroup var device: DeviceOption

    @Option(help: "How activations are stored: fp32, fp16 or bf16 (arithmetic stays float32).")
    var precision: Precision = .fp32

    @Flag(inversion: .prefixedNo, help: "Normalise with the training split's statistics (else the test split's own); default: as the weights record, else the training split's.")
    var trainStatistics: Bool?

    func run() throws {
        do {
            guard batchSize > 0 else { throw CLNetError.invalidArgument("--batch-size must be positive, not \(batchSize)") }
            if let subset, subset <= 0 { throw CLNetError.invalidArgument("--subset must be positive, not \(subset)") }
            let source = try DataSource(parsing: data)
            let weightsFile = try LoadedWeights(weights)
            if taskOptions.task != .classify {
                let recorded = weightsFile.info.flatMap { i in i.mean.flatMap { m in i.std.map { (mean: m, std: $0) } } }
                let samples = try taskOptions.samples(source, train: false, count: subset, image: image, normalization: recorded)
                var fill = ["channels": "\(samples.channels)"]
                if taskOptions.task == .segment { fill["classes"] = "\(samples.classes)" }
                let spec = ModelSpec.filling(try weightsFile.model(model), fill)
                let loader = try BatchLoader(source: samples, batchSize: min(batchSize, samples.count), training: false, seed: 0)
                return try evaluate(spec, weightsFile, loader, what: "\(samples.count) test images")
            }
            if case let .imageFolder(root) = source {
                guard trainStatistics == nil else {
                    throw CLNetError.invalidArgument("--[no-]train-statistics is for data sets normalised by their statistics; an image folder uses --mean and --std")
                }
                return try folder(root, weightsFile)
            }
            guard !image.given else {
                throw CLNetError.invalidArgument("--image-size, --mean and --std are for image folders; \(data) keeps its images' size and statistics")
            }
            var test = try source.load(train: false)
            if let subset { test = test.prefix(subset) }
            let stats: (mean: [Float], std: [Float])
            switch trainStatistics {
            case true?: stats = try source.load(train: true).channelStatistics()
            case false?: stats = test.channelStatistics()
            case nil:
                if let info = weightsFile.info, let mean = info.mean, let std = info.std, mean.count == test.channels, std.count == test.channels {
                    stats = (mean, std)
                } else {
                    stats = try source.load(train: true).channelStatistics()
                }
            }
            let spec = ModelSpec.filling(try weightsFile.model(model), ["channels": "\(test.channels)", "classes": "\(test.classes)"])
            let loader = try BatchLoader(data: test, batchSize: min(batchSize, test.count),
                                         preprocessing: Preprocessing(mean: stats.mean, std: stats.std), training: false, seed: 0)
            try evaluate(spec, weightsFile, loader, what: "\(test.count) test images")
        } catch {
            throw fail(error)
        }
    }

    /// The val/ split of an image folder (train/ is not needed), with torchvision's evaluation
    /// transform at the size and normalisation the weights record unless given.
    private func folder(_ root: String, _ weightsFile: LoadedWeights) throws {
        let validation = try ImageList(scanning: root + "/val")
        if let names = weightsFile.info?.classes, names != validation.classes {
            throw CLNetError.invalidDataset("""
                the class folders of \(root)/val are not the classes \(weightsFile.path) was trained on \
                (\(names.prefix(5).joined(separator: ", "))\(names.count > 5 ? ", ..." : ""))
                """)
        }
        let list = subset.map { validation.subset($0) } ?? validation
        let samples = ImageFolderSamples(images: list, transform: try image.evaluation(defaults: weightsFile.info))
        let spec = ModelSpec.filling(try weightsFile.model(model), ["channels": "3", "classes": "\(validation.classes.count)"])
        let loader = try BatchLoader(source: samples, batchSize: min(batchSize, samples.count), training: false, seed: 0)
        try evaluate(spec, weightsFile, loader, what: "\(samples.count) images of val/")
    }

    private func evaluate(_ spec: String, _ weightsFile: LoadedWeights, _ loader: BatchLoader, what: String) throws {
        let (graph, logits) = try ModelSpec.graph(spec, batch: loader.batchSize, size: loader.source.height, loss: false)
        let executor = try Executor(graph: graph, context: try Context(device: try device.select()), training: false, keep: [logits], precision: precision)
        try executor.load(weightsFile.file, ignoring: "optimizer.")
        let start = ContinuousClock.now
        let e = try Trainer.evaluate(executor, logits: logits, loader: loader)
        print("\(spec) on \(data) (\(what)): \(taskOptions.describe(e)) in \(format(seconds(since: start), 1)) s")
    }
}
