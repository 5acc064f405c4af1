import ArgumentParser
import CLNet

/// The options of the commands that read image files (`train` and `eval` on an image folder,
/// `predict`): the input's size and its normalisation.
struct ImageOptions: ParsableArguments {
    @Option(help: "Image files: the side of the square input (default 224). Training crops with RandomResizedCrop; testing and predict resize the shorter side to N*256/224 and take the centre.")
    var imageSize: Int?

    @Option(help: "Image files: the normalisation's per-channel mean of 0...1 RGB values (default ImageNet's 0.485,0.456,0.406).")
    var mean: String?

    @Option(help: "Image files: the normalisation's per-channel standard deviation (default ImageNet's 0.229,0.224,0.225).")
    var std: String?

    /// The side of the square input.
    var size: Int { imageSize ?? 224 }

    /// Whether any of these options was given: other data than image files must refuse them.
    var given: Bool { imageSize != nil || mean != nil || std != nil }

    /// torchvision's training transform with these options.
    func training() throws -> ImageTransform {
        try .training(size: size, mean: try rgb(mean, "--mean", ImageTransform.imageNetMean),
                      std: try rgb(std, "--std", ImageTransform.imageNetStd))
    }

    /// torchvision's evaluation transform with these options; what they leave out comes from
    /// the weights' record of their training, else torchvision's defaults.
    func evaluation(defaults info: WeightsInfo? = nil) throws -> ImageTransform {
        let recorded = info?.mean?.count == 3 && info?.std?.count == 3
        return try .evaluation(size: imageSize ?? info?.imageSize ?? 224,
                               mean: try rgb(mean, "--mean", recorded ? info!.mean! : ImageTransform.imageNetMean),
                               std: try rgb(std, "--std", recorded ? info!.std! : ImageTransform.imageNetStd))
    }

    private func rgb(_ text: String?, _ option: String, _ standard: [Float]) throws -> [Float] {
        guard let text else { return standard }
        let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Float(String($0.filter { $0 != " " })) }
        guard values.count == 3, let r = values[0], let g = values[1], let b = values[2] else {
            throw CLNetError.invalidArgument("\(option) takes three numbers (R,G,B), not '\(text)'")
        }
        return [r, g, b]
    }
}
