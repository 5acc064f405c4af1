import ArgumentParser
import CLNet
import CLNetCLI

/// What a network is trained or evaluated for.
enum TaskChoice: String, ExpressibleByArgument, CaseIterable {
    case classify, sr, segment
}

/// `--task` and its options, shared by `clnet train` and `clnet eval`: the samples each task
/// makes of a data set.
struct TaskOptions: ParsableArguments {
    @Option(help: """
        classify; sr (super-resolution, drrn: models: high-resolution images of any data set, the inputs reduced by \
        bicubic interpolation by --scale and enlarged back; RGB becomes luminance); or segment (denseaspp: models: \
        fashion-mnist gives synthetic canvases of garments labelled per pixel, imagefolder:DIR takes DIR/train and \
        DIR/val each with images/ and masks/ of 8-bit grayscale PNG class indices, 255 ignored).
        """)
    var task: TaskChoice = .classify

    @Option(help: "Super-resolution: the factor the inputs are reduced by (2 to 8; the papers use 2, 3 and 4).")
    var scale = 2

    @Option(help: "Segmentation on fashion-mnist: the side of the synthetic canvases.")
    var canvas = 56

    func validate() throws {
        guard (2...8).contains(scale) else { throw ValidationError("--scale must be 2 to 8, not \(scale)") }
        guard (28...1024).contains(canvas) else { throw ValidationError("--canvas must be 28 to 1024 pixels, not \(canvas)") }
    }

    /// The split `train` (or the test split) of `source` as this task's samples; `count` limits
    /// them (the synthetic segmentation set draws 10,000 training and 2,000 test canvases unless
    /// told). Segmentation images are normalised with `normalization` (the training split's,
    /// or the weights' record), else their own statistics.
    func samples(_ source: DataSource, train: Bool, count: Int?, image: ImageOptions,
                 normalization: (mean: [Float], std: [Float])? = nil) throws -> any SampleSource {
        switch task {
        case .classify:
            throw CLNetError.invalidState("classification reads its data itself")
        case .sr:
            let base: any SampleSource
            if case let .imageFolder(root) = source {
                let list = try ImageList(scanning: root + (train ? "/train" : "/val"))
                base = ImageFolderSamples(images: count.map { list.subset($0) } ?? list,
                                          transform: try .evaluation(size: image.size, mean: [0, 0, 0], std: [1, 1, 1]))
            } else {
                var data = try source.load(train: train)
                if let count { data = data.prefix(count) }
                base = try InMemorySamples(data: data, preprocessing: Preprocessing(mean: .init(repeating: 0, count: data.channels),
                                                                                    std: .init(repeating: 1, count: data.channels)))
            }
            return try SuperResolutionSamples(base: base, scale: scale, luminance: base.channels == 3 || base.channels == 1)
        case .segment:
            switch source {
            case let .imageFolder(root):
                var data = try SegmentationDataset.folder(root + (train ? "/train" : "/val"))
                if let count, count < data.count { data = try data.prefix(count) }
                return SegmentationSamples(data: data, mean: normalization?.mean, std: normalization?.std)
            case .idx:
                let garments = try source.load(train: train)
                let data = try SegmentationDataset.compositing(garments, count: count ?? (train ? 10_000 : 2_000), size: canvas,
                                                               seed: train ? 1 : 2)
                return SegmentationSamples(data: data, mean: normalization?.mean, std: normalization?.std)
            default:
                throw CLNetError.invalidArgument("--task segment takes fashion-mnist[:DIR] (synthetic canvases) or imagefolder:DIR (images/ and masks/)")
            }
        }
    }

    /// The test figures of an evaluation, as this task measures them.
    func describe(_ e: Evaluation) -> String {
        switch task {
        case .classify:
            return "loss \(format(e.loss, 4)), top-1 \(format(e.top1 * 100, 2))%, top-5 \(format(e.top5 * 100, 2))%"
        case .sr:
            return "MSE \(format(e.loss, 6)), PSNR \(format(e.psnr ?? 0, 2)) dB (bicubic \(format(e.bicubicPSNR ?? 0, 2)) dB), "
                + "SSIM \(format(e.ssim ?? 0, 4))"
        case .segment:
            return "loss \(format(e.loss, 4)), pixel accuracy \(format(e.top1 * 100, 2))%, mean IoU \(format((e.meanIoU ?? 0) * 100, 2))%"
        }
    }
}
