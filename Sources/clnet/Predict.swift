import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify image files (JPEG or PNG) with trained weights, or with --task sr|segment write the enlarged image or the label map as PNG.",
        discussion: """
            Each image goes through torchvision's evaluation transform (the shorter side resized to \
            --image-size * 256 / 224 with PIL's antialiased bilinear filter, the centre square, the normalisation) \
            and the model in eval mode. Weights written by CLNet record their model, input size, normalisation and \
            class names, which are used unless given. Class names come from --classes, else from the weights, else \
            from classes.txt beside them (which `clnet train` writes for an image folder), else the class indices \
            are printed. \
            --output writes `input` (the preprocessed [N, 3, size, size] batch) and `logits` in safetensors, to \
            compare the preprocessing with torchvision's.
            """)

    @Option(help: "A model name or specification (see `clnet models`; default: the model --weights records); its classes come from the class list or the weights.")
    var model: String?

    @Option(help: "Weights or a checkpoint in safetensors.")
    var weights: String

    @Option(help: "The class names, one per line in label order (default: classes.txt beside the weights).")
    var classes: String?

    @Option(help: "Classes to print per image.")
    var top = 5

    @OptionGroup var image: ImageOptions

    @Option(help: "Images per batch.")
    var batchSize = 16

    @Flag(help: "Print JSON: one object per image with its file and top classes.")
    var json = false

    @Option(help: "Also write the preprocessed inputs and the logits to this safetensors file (written atomically).")
    var output: String?

    @OptionGroup var device: DeviceOption

    @Option(help: "How activations are stored: fp32, fp16 or bf16 (arithmetic stays float32).")
    var precision: Precision = .fp32

    @OptionGroup var taskOptions: TaskOptions

    @Option(help: "With --task sr or segment: the folder the output images go to, one PNG per input named after it (the enlarged image, or the label map in colours).")
    var outputImages: String?

    @Argument(help: "The image files.")
    var images: [String]

    func run() throws {
        do {
            try execute()
        } catch {
            throw fail(error)
        }
    }

    private func execute() throws {
        guard !images.isEmpty else { throw CLNetError.invalidArgument("give at least one image file") }
        guard top > 0 else { throw CLNetError.invalidArgument("--top must be positive, not \(top)") }
        guard batchSize > 0 else { throw CLNetError.invalidArgument("--batch-size must be positive, not \(batchSize)") }
        let weightsFile = try LoadedWeights(weights)
        if taskOptions.task != .classify { return try predictImages(weightsFile) }
        let file = weightsFile.file
        // The size and normalisation the weights were trained at, unless given.
        let transform = try image.evaluation(defaults: weightsFile.info)
        let imageSize = transform.size
        // Class names: --classes, else the weights' own, else classes.txt beside them.
        let besideWeights = URL(fileURLWithPath: weights).deletingLastPathComponent().appendingPathComponent("classes.txt")
        let names: [String]? = try classes.map { try ImageFolder.readClasses(URL(fileURLWithPath: $0)) } ?? weightsFile.info?.classes
            ?? (FileManager.default.fileExists(atPath: besideWeights.path) ? try ImageFolder.readClasses(besideWeights) : nil)
        var fill = ["channels": "3"]
        if let names { fill["classes"] = "\(names.count)" } else if let n = Self.classCount(file) { fill["classes"] = "\(n)" }
        let spec = ModelSpec.filling(try weightsFile.model(model), fill)
        let batch = min(batchSize, images.count)
        let (graph, logits) = try ModelSpec.graph(spec, batch: batch, size: imageSize, loss: false)
        let classCount = graph.shape(of: logits)[1]
        if let names, names.count != classCount {
            throw CLNetError.invalidArgument("the class list has \(names.count) names but \(spec) predicts \(classCount) classes")
        }
        let executor = try Executor(graph: graph, context: try Context(device: try device.select()), training: false, keep: [logits], precision: precision)
        try executor.load(file, ignoring: "optimizer.")

        // Decoded on every core, a batch ahead of the device; the first file that fails stops
        // everything with its name. The last batch is padded with repeats of its first image.
        let loader = try BatchLoader(source: ImageFolderSamples(images: ImageList(files: images), transform: transform),
                                     batchSize: batch, training: false, seed: 0)
        let per = 3 * imageSize * imageSize
        var inputs: [Float] = [], allLogits: [Float] = []
        for index in 0..<loader.batchesPerEpoch {
            let b = try loader.batch(epoch: 0, index: index)
            if output != nil { inputs += b.inputs.prefix(b.count * per) }
            try executor.forward(["input": b.inputs])
            allLogits += try executor.read(logits).prefix(b.count * classCount)
        }

        var results: [PredictionRecord] = []
        for (i, path) in images.enumerated() {
            let row = allLogits[(i * classCount)..<((i + 1) * classCount)].map(Double.init)
            let m = row.max()!, z = row.reduce(0) { $0 + exp($1 - m) }
            let ranked = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(top)
            results.append(PredictionRecord(file: path, top: ranked.map { k in
                PredictionRecord.Guess(index: k, name: names?[k], probability: exp(row[k] - m) / z)
            }))
        }
        if let output {
            try SafeTensors.write([("input", .float32(inputs, shape: [images.count, 3, imageSize, imageSize])),
                                   ("logits", .float32(allLogits, shape: [images.count, classCount]))],
                                  to: URL(fileURLWithPath: output))
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        } else {
            for r in results {
                print(r.file)
                for g in r.top {
                    let percent = format(g.probability * 100, 2)
                    print("  \(String(repeating: " ", count: max(0, 6 - percent.count)))\(percent)%  \(g.name.map { "\($0) (\(g.index))" } ?? "class \(g.index)")")
                }
            }
        }
    }

    /// The class count of a torchvision-named classifier in the weights (`fc.weight` of a
    /// ResNet, `classifier.weight` of a DenseNet).
    static func classCount(_ file: SafeTensors) -> Int? {
        for name in ["fc.weight", "classifier.weight"] {
            if let e = file.entries[name], e.shape.count == 2 { return e.shape[0] }
        }
        return nil
    }
}

/// One image's answer, as --json prints it.
struct PredictionRecord: Codable {
    struct Guess: Codable {
        var index: Int
        var name: String?
        var probability: Double
    }
    var file: String
    var top: [Guess]
}
