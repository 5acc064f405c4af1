// Semantic segmentation data: images with one class per pixel, from a folder of images and PNG
// masks, or composited from Fashion-MNIST (no segmentation data set can be downloaded here), and
// the measures of a segmentation: pixel accuracy and mean intersection over union.

import FoundationEssentials

/// Images and their label maps, held in memory: `pixels` N x C x H x W, `masks` N x H x W with a
/// class per pixel or `ignoreIndex` for pixels that count for nothing.
public struct SegmentationDataset: Sendable {
    public let pixels: [UInt8]
    public let masks: [UInt8]
    public let channels: Int, height: Int, width: Int
    public let classes: Int
    public let classNames: [String]?
    public static let ignoreIndex = 255

    public var count: Int { masks.count / max(height * width, 1) }

    public init(pixels: [UInt8], masks: [UInt8], channels: Int, height: Int, width: Int, classes: Int,
                classNames: [String]? = nil) throws(CLNetError) {
        let plane = height * width
        guard channels > 0, plane > 0, masks.count % plane == 0, pixels.count == masks.count * channels,
              (1...255).contains(classes) else {
            throw .invalidDataset("segmentation data: \(pixels.count) pixels and \(masks.count) labels do not make \(channels)x\(height)x\(width) images of 1 to 255 classes")
        }
        if let bad = masks.first(where: { Int($0) >= classes && Int($0) != Self.ignoreIndex }) {
            throw .invalidDataset("segmentation data: label \(bad) is not one of the \(classes) classes, nor \(Self.ignoreIndex) (ignored)")
        }
        (self.pixels, self.masks, self.channels, self.height, self.width, self.classes, self.classNames) =
            (pixels, masks, channels, height, width, classes, classNames)
    }

    /// The synthetic set CLNet's tests and recorded runs use: `count` canvases of `size` x
    /// `size`, each with one to three Fashion-MNIST garments of `garments` pasted at random
    /// places (later ones on top); a pixel is labelled with its garment's class plus one where
    /// the garment's ink is over a quarter of full scale, and 0 (background) elsewhere. Drawn
    /// from `seed` alone.
    public static func compositing(_ garments: ImageDataset, count: Int, size: Int = 56, seed: UInt64) throws(CLNetError) -> SegmentationDataset {
        guard count > 0, garments.count > 0 else { throw .invalidArgument("compositing needs garments and at least one canvas") }
        guard garments.channels == 1, garments.height <= size, garments.width <= size else {
            throw .invalidArgument("compositing needs one-channel garments no larger than the \(size)x\(size) canvas")
        }
        var rng = SeededGenerator(seed: seed)
        var pixels = [UInt8](repeating: 0, count: count * size * size), masks = pixels
        let (gh, gw) = (garments.height, garments.width)
        for n in 0..<count {
            let base = n * size * size
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let g = Int(rng.next() % UInt64(garments.count))
                let top = Int(rng.next() % UInt64(size - gh + 1)), left = Int(rng.next() % UInt64(size - gw + 1))
                let label = UInt8(garments.labels[g] + 1)
                for y in 0..<gh {
                    for x in 0..<gw {
                        let v = garments.pixels[g * gh * gw + y * gw + x]
                        guard v > 64 else { continue }
                        pixels[base + (top + y) * size + left + x] = v
                        masks[base + (top + y) * size + left + x] = label
                    }
                }
            }
        }
        let names = ["background", "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
        return try SegmentationDataset(pixels: pixels, masks: masks, channels: 1, height: size, width: size,
                                       classes: garments.classes + 1, classNames: garments.classes == 10 ? names : nil)
    }

    /// A folder split in the usual layout: `DIR/images/NAME.png|jpg` and `DIR/masks/NAME.png`,
    /// each mask an 8-bit grayscale PNG of class indices (255: ignored), every image of one
    /// size. `classes`: how many (default: the largest label plus one).
    public static func folder(_ dir: String, classes: Int? = nil) throws(CLNetError) -> SegmentationDataset {
        let images = dir + "/images", masks = dir + "/masks"
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: images).filter { !$0.hasPrefix(".") }.sorted()
        } catch {
            throw .invalidDataset("\(images): cannot list it (\(error)); a segmentation folder holds images/ and masks/")
        }
        guard !names.isEmpty else { throw .invalidDataset("\(images) holds no images") }
        var pixels: [UInt8] = [], labels: [UInt8] = [], size: (Int, Int)? = nil
        for name in names {
            let stem = name.split(separator: ".", omittingEmptySubsequences: false).dropLast().joined(separator: ".")
            let image = try ImageFile.read(images + "/" + name), mask = try ImageFile.read(masks + "/" + stem + ".png")
            guard (image.width, image.height) == (mask.width, mask.height) else {
                throw .badImage(file: masks + "/" + stem + ".png", message: "is \(mask.width)x\(mask.height) but its image \(image.width)x\(image.height)")
            }
            if let size, size != (image.height, image.width) {
                throw .badImage(file: images + "/" + name, message: "is \(image.width)x\(image.height); every image of the split must be \(size.1)x\(size.0)")
            }
            size = (image.height, image.width)
            let plane = image.width * image.height
            for ch in 0..<3 { for i in 0..<plane { pixels.append(image.pixels[i * 3 + ch]) } }
            for i in 0..<plane { labels.append(mask.pixels[i * 3]) }
        }
        let most = Int(labels.filter { Int($0) != ignoreIndex }.max() ?? 0)
        return try SegmentationDataset(pixels: pixels, masks: labels, channels: 3, height: size!.0, width: size!.1,
                                       classes: classes ?? most + 1)
    }

    /// The first `n` images.
    public func prefix(_ n: Int) throws(CLNetError) -> SegmentationDataset {
        let k = min(n, count), plane = height * width
        return try SegmentationDataset(pixels: Array(pixels.prefix(k * plane * channels)), masks: Array(masks.prefix(k * plane)),
                                       channels: channels, height: height, width: width, classes: classes, classNames: classNames)
    }

    /// Per-channel mean and standard deviation of the pixels scaled to 0...1.
    func channelStatistics() -> (mean: [Float], std: [Float]) {
        ImageDataset.channelStatistics(pixels, count: count, channels: channels, plane: height * width)
    }
}

/// Segmentation samples: each image normalised per channel, its label map beside it (one
/// label per pixel); in training, half are mirrored left to right, label maps alike.
public struct SegmentationSamples: SampleSource {
    public let data: SegmentationDataset
    public let mean: [Float], std: [Float]

    /// With `mean` and `std` nil, the data's own statistics.
    public init(data: SegmentationDataset, mean: [Float]? = nil, std: [Float]? = nil) {
        let stats: (mean: [Float], std: [Float]) = mean == nil || std == nil ? data.channelStatistics() : (mean!, std!)
        (self.data, self.mean, self.std) = (data, mean ?? stats.mean, std ?? stats.std)
    }

    public var count: Int { data.count }
    public var classes: Int { data.classes }
    public var channels: Int { data.channels }
    public var height: Int { data.height }
    public var width: Int { data.width }
    public var labelsPerSample: Int { data.height * data.width }
    public var normalization: (mean: [Float], std: [Float])? { (mean, std) }
    public var classNames: [String]? { data.classNames }
    public func label(of sample: Int) -> Int { 0 }
    public func file(of sample: Int) -> String? { nil }

    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator,
                        into out: UnsafeMutableBufferPointer<Float>, offset: Int) throws(CLNetError) {
        try prepare(sample: index, augment: augment, rng: &rng, input: out, offset: offset, target: nil, labels: nil)
    }

    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator, input: UnsafeMutableBufferPointer<Float>,
                        offset: Int, target: UnsafeMutableBufferPointer<Float>?, labels: UnsafeMutableBufferPointer<Int>?) throws(CLNetError) {
        let (c, h, w) = (data.channels, data.height, data.width), plane = h * w
        let flip = augment && rng.next() & 1 == 1
        for y in 0..<h {
            for x in 0..<w {
                let sx = flip ? w - 1 - x : x
                for ch in 0..<c {
                    let v = Float(data.pixels[(index * c + ch) * plane + y * w + sx]) / 255
                    input[offset + ch * plane + y * w + x] = (v - mean[ch]) / std[ch]
                }
                labels?[y * w + x] = Int(data.masks[index * plane + y * w + sx])
            }
        }
    }
}

/// Pixel accuracy and intersection over union of predicted label maps, over the pixels whose
/// label is not ignored.
public struct SegmentationScore: Sendable {
    public let classes: Int
    /// confusion[truth * classes + prediction]
    public private(set) var confusion: [Int]

    public init(classes: Int) {
        self.classes = classes
        confusion = [Int](repeating: 0, count: classes * classes)
    }

    /// Adds a batch's logits [N, K, H, W] (the prediction is each pixel's first maximum) against
    /// its labels, for the first `count` samples.
    public mutating func add(logits z: [Float], labels: [Int], count: Int, height: Int, width: Int) {
        let plane = height * width
        for n in 0..<count {
            for p in 0..<plane {
                let truth = labels[n * plane + p]
                guard truth >= 0, truth < classes else { continue }
                confusion[truth * classes + Self.prediction(z, classes: classes, plane: plane, at: n * classes * plane + p)] += 1
            }
        }
    }

    /// The predicted class of one pixel: the first maximum of its logits, which start at
    /// `index` of `z` and lie `plane` apart.
    public static func prediction(_ z: [Float], classes: Int, plane: Int, at index: Int) -> Int {
        var best = 0, top = z[index]
        for k in 1..<max(classes, 1) where z[index + k * plane] > top { (best, top) = (k, z[index + k * plane]) }
        return best
    }

    public var pixelAccuracy: Double {
        let right = (0..<classes).reduce(0) { $0 + confusion[$1 * classes + $1] }
        return Double(right) / Double(max(confusion.reduce(0, +), 1))
    }

    /// Each class's intersection over union; nil for a class neither labelled nor predicted.
    public var intersectionOverUnion: [Double?] {
        (0..<classes).map { k in
            let tp = confusion[k * classes + k]
            let truth = (0..<classes).reduce(0) { $0 + confusion[k * classes + $1] }
            let predicted = (0..<classes).reduce(0) { $0 + confusion[$1 * classes + k] }
            let union = truth + predicted - tp
            return union > 0 ? Double(tp) / Double(union) : nil
        }
    }

    /// The mean over the classes that occur (labelled or predicted).
    public var meanIoU: Double {
        let present = intersectionOverUnion.compactMap { $0 }
        return present.isEmpty ? 0 : present.reduce(0, +) / Double(present.count)
    }
}
