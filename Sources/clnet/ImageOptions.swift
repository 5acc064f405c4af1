import ArgumentParser
import CLNet

/// The options of the commands that read image files (`train` and `eval` on an image folder,
/// `predict`): the input's size and its normalisation.
struct ImageOptions: ParsableArguments {
    @Option(help: "Image files: the side of the square input. Training crops with RandomResizedCrop; testing and predict resize the shorter side to N*256/224 and take the centre.")
    var imageSize = 224

    @Option(help: "Image files: the normalisation's per-channel mean of 0...1 RGB values (default ImageNet's 0.485,0.456,0.406).")
    var mean: String?

    @Option(help: "Image files: the normalisation's per-channel standard deviation (default ImageNet's 0.229,0.224,0.225).")
    var std: String?

    /// Whether --mean or --std was given.
    var normalisationGiven: Bool { mean != nil || std != nil }

    /// torchvision's training transform with these options.
    func training() throws -> ImageTransform {
        try .training(size: imageSize, mean: try rgb(mean, "--mean", ImageTransform.imageNetMean),
                      std: try rgb(std, "--std", ImageTransform.imageNetStd))
    }

    /// torchvision's evaluation transform with these options.
    func evaluation() throws -> ImageTransform {
        try .evaluation(size: imageSize, mean: try rgb(mean, "--mean", ImageTransform.imageNetMean),
                        std: try rgb(std, "--std", ImageTransform.imageNetStd))
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
