// torchvision's ImageNet preprocessing of decoded photos: RandomResizedCrop and a horizontal
// flip for training, Resize and CenterCrop for evaluation, then ToTensor and Normalize. The
// resize is PIL's antialiased bilinear filter in its own fixed-point arithmetic, so that an
// image gives the tensor torchvision gives (a plain bilinear sample of a 4x reduction would not).

import FoundationEssentials
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a decoded image becomes a `3 x size x size` network input, with torchvision's defaults.
public struct ImageTransform: Sendable, Equatable {
    /// How the square of side `size` is cut from the image.
    public enum Crop: Sendable, Equatable {
        /// `RandomResizedCrop(size, scale, ratio)`: a random region of `scale` times the image's
        /// area and aspect ratio in `ratio` (drawn log-uniformly), resized to the square.
        case randomResized(scale: ClosedRange<Double>, ratio: ClosedRange<Double>)
        /// `Resize(resize)` (the shorter side becomes `resize`) then `CenterCrop(size)`.
        case center(resize: Int)
    }

    /// The side of the square input.
    public var size: Int
    public var crop: Crop
    /// Mirror half the images (`RandomHorizontalFlip(0.5)`), after the crop.
    public var horizontalFlip: Bool
    /// Per-channel mean and standard deviation of RGB values scaled to 0...1 (`Normalize`).
    public var mean: [Float], std: [Float]

    /// ImageNet's channel statistics, which torchvision's pretrained weights expect.
    public static let imageNetMean: [Float] = [0.485, 0.456, 0.406]
    public static let imageNetStd: [Float] = [0.229, 0.224, 0.225]

    public init(size: Int, crop: Crop, horizontalFlip: Bool, mean: [Float] = imageNetMean,
                std: [Float] = imageNetStd) throws(CLNetError) {
        guard size > 0 else { throw .invalidArgument("the image size must be positive, not \(size)") }
        guard mean.count == 3, std.count == 3, std.allSatisfy({ $0 > 0 && $0.isFinite }), mean.allSatisfy(\.isFinite) else {
            throw .invalidArgument("normalisation needs three means and three positive standard deviations (R, G, B), not \(mean) and \(std)")
        }
        switch crop {
        case let .randomResized(scale, ratio):
            guard scale.lowerBound > 0, scale.upperBound <= 1, ratio.lowerBound > 0 else {
                throw .invalidArgument("RandomResizedCrop needs a scale within (0, 1] and a positive ratio, not \(scale) and \(ratio)")
            }
        case let .center(resize):
            guard resize >= size else {
                throw .invalidArgument("the evaluation resize (\(resize)) must be at least the crop (\(size))")
            }
        }
        self.size = size
        self.crop = crop
        self.horizontalFlip = horizontalFlip
        self.mean = mean
        self.std = std
    }

    /// torchvision's ImageNet training transform at `size`.
    public static func training(size: Int = 224, mean: [Float] = imageNetMean, std: [Float] = imageNetStd) throws(CLNetError) -> ImageTransform {
        try ImageTransform(size: size, crop: .randomResized(scale: 0.08...1, ratio: 0.75...(4.0 / 3)), horizontalFlip: true,
                           mean: mean, std: std)
    }

    /// torchvision's ImageNet evaluation transform at `size`: the shorter side resized to
    /// `size * 256 / 224` (256 for 224), then the centre square.
    public static func evaluation(size: Int = 224, mean: [Float] = imageNetMean, std: [Float] = imageNetStd) throws(CLNetError) -> ImageTransform {
        try ImageTransform(size: size, crop: .center(resize: size * 256 / 224), horizontalFlip: false, mean: mean, std: std)
    }

    /// Whether the transform draws random numbers.
    public var isRandom: Bool {
        if case .randomResized = crop { return true }
        return horizontalFlip
    }

    /// The normalised `3 x size x size` tensor of `image`.
    public func tensor(_ image: RGBImage, rng: inout SeededGenerator) -> [Float] {
        var out = [Float](repeating: 0, count: 3 * size * size)
        out.withUnsafeMutableBufferPointer { apply(image, rng: &rng, into: $0, offset: 0) }
        return out
    }

    /// Writes the tensor of `image` at `offset` in `out`.
    public func apply(_ image: RGBImage, rng: inout SeededGenerator, into out: UnsafeMutableBufferPointer<Float>, offset: Int) {
        let square: RGBImage
        var flip = false
        switch crop {
        case let .randomResized(scale, ratio):
            let box = Self.randomResizedBox(width: image.width, height: image.height, scale: scale, ratio: ratio, rng: &rng)
            square = Self.resize(image, box: box, width: size, height: size)
        case let .center(resize):
            let (w, h) = Self.shorterSide(width: image.width, height: image.height, to: resize)
            square = Self.resize(image, box: (0, 0, image.width, image.height), width: w, height: h,
                                 part: Self.centerBox(width: w, height: h, size: size))
        }
        if horizontalFlip { flip = rng.next() & 1 == 1 }
        let plane = size * size
        square.pixels.withUnsafeBufferPointer { p in
            for c in 0..<3 {
                let scale = 1 / (255 * std[c]), shift = -mean[c] / std[c]
                for y in 0..<size {
                    for x in 0..<size {
                        let sx = flip ? size - 1 - x : x
                        out[offset + c * plane + y * size + x] = Float(p[(y * size + sx) * 3 + c]) * scale + shift
                    }
                }
            }
        }
    }

    // MARK: The geometry, as torchvision computes it

    /// A region of an image: its left column, top row, width and height.
    public typealias Box = (x: Int, y: Int, width: Int, height: Int)

    /// `RandomResizedCrop.get_params`: ten tries at a region of random area and aspect ratio
    /// that fits, then the centre region of the ratio's nearest bound.
    static func randomResizedBox(width: Int, height: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>,
                                 rng: inout SeededGenerator) -> Box {
        let area = Double(width * height)
        let logRatio = (log(ratio.lowerBound), log(ratio.upperBound))
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * rng.uniform())
            let aspect = exp(logRatio.0 + (logRatio.1 - logRatio.0) * rng.uniform())
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0, w <= width, h > 0, h <= height {
                let top = Int(rng.next() % UInt64(height - h + 1)), left = Int(rng.next() % UInt64(width - w + 1))
                return (left, top, w, h)
            }
        }
        let inRatio = Double(width) / Double(height)
        var (w, h) = (width, height)
        if inRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return ((width - w) / 2, (height - h) / 2, w, h)
    }

    /// `Resize(side)`'s output size: the shorter side becomes `side`, the longer keeps the
    /// aspect ratio, truncated as torchvision truncates it.
    static func shorterSide(width: Int, height: Int, to side: Int) -> (width: Int, height: Int) {
        let short = min(width, height), long = max(width, height)
        let newLong = Int(Double(side * long) / Double(short))
        return width <= height ? (side, newLong) : (newLong, side)
    }

    /// `CenterCrop(size)`'s region, offsets rounded half to even as Python's round does.
    static func centerBox(width: Int, height: Int, size: Int) -> Box {
        let top = Int((Double(height - size) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(width - size) / 2).rounded(.toNearestOrEven))
        return (left, top, size, size)
    }

    static func crop(_ image: RGBImage, box: Box) -> RGBImage {
        var out = [UInt8](repeating: 0, count: box.width * box.height * 3)
        for y in 0..<box.height {
            let src = ((box.y + y) * image.width + box.x) * 3
            out.replaceSubrange((y * box.width * 3)..<((y + 1) * box.width * 3),
                                with: image.pixels[src..<(src + box.width * 3)])
        }
        return RGBImage(unchecked: box.width, box.height, out)
    }

    // MARK: PIL's antialiased bilinear resize (Resample.c)

    /// Fixed-point filter taps of one axis, for the output positions of a window: for each, the
    /// first input index, the tap count, and `stride` weights scaled by 2^22 (PIL's
    /// PRECISION_BITS).
    struct Taps {
        var first: [Int], count: [Int], weights: [Int32], stride: Int
    }

    static let precisionBits = 22

    /// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc` for the triangle filter, whose
    /// support widens with the reduction, which is what antialiases; only for the positions
    /// `window` of an axis of `output`, so that a long thin image costs its window, not its axis.
    static func taps(input: Int, output: Int, window: Range<Int>) -> Taps {
        let scale = Double(input) / Double(output), filterScale = max(scale, 1)
        let support = filterScale, stride = Int(support.rounded(.up)) * 2 + 1, ss = 1 / filterScale
        var t = Taps(first: [], count: [], weights: [Int32](repeating: 0, count: window.count * stride), stride: stride)
        var k = [Double](repeating: 0, count: stride)
        for (n, o) in window.enumerated() {
            let center = (Double(o) + 0.5) * scale
            // C's (int) truncates toward zero; both ends are then clamped to the image.
            let lo = max(Int(center - support + 0.5), 0), hi = min(Int(center + support + 0.5), input)
            var total = 0.0
            for i in 0..<(hi - lo) {
                let x = abs((Double(i + lo) - center + 0.5) * ss)
                k[i] = x < 1 ? 1 - x : 0
                total += k[i]
            }
            for i in 0..<(hi - lo) {
                let w = total == 0 ? 0 : k[i] / total * Double(1 << precisionBits)
                t.weights[n * stride + i] = Int32(w < 0 ? (w - 0.5) : (w + 0.5))
            }
            t.first.append(lo)
            t.count.append(hi - lo)
        }
        return t
    }

    /// PIL's `clip8`: the fixed-point sum, rounded by its starting half, back to a byte.
    @inline(__always)
    static func clip8(_ sum: Int) -> UInt8 { UInt8(clamping: sum >> precisionBits) }

    /// `image.crop(box).resize((width, height), BILINEAR)`, or of it only the window `part`
    /// (the evaluation's centre crop: each output pixel depends on its taps alone, so the window
    /// is what the whole resize would hold there). The horizontal pass runs first, over the rows
    /// the vertical one reads, and each pass rounds to bytes, as PIL does.
    static func resize(_ image: RGBImage, box: Box, width: Int, height: Int, part: Box? = nil) -> RGBImage {
        let part = part ?? (0, 0, width, height)
        if box.width == width && box.height == height {
            return crop(image, box: (box.x + part.x, box.y + part.y, part.width, part.height))
        }
        let horizontal = taps(input: box.width, output: width, window: part.x..<(part.x + part.width))
        let vertical = taps(input: box.height, output: height, window: part.y..<(part.y + part.height))
        let half = 1 << (precisionBits - 1)
        let (pw, ph) = (part.width, part.height)
        // Rows of the crop that the window's vertical taps read.
        let rowFirst = vertical.first[0]
        let rowEnd = vertical.first[ph - 1] + vertical.count[ph - 1]
        let rows = rowEnd - rowFirst
        var middle = [UInt8](repeating: 0, count: rows * pw * 3)
        image.pixels.withUnsafeBufferPointer { src in
            horizontal.weights.withUnsafeBufferPointer { kw in
                middle.withUnsafeMutableBufferPointer { dst in
                    for r in 0..<rows {
                        let row = ((box.y + rowFirst + r) * image.width + box.x) * 3
                        for o in 0..<pw {
                            var s0 = half, s1 = half, s2 = half
                            let first = horizontal.first[o], k = o * horizontal.stride
                            for i in 0..<horizontal.count[o] {
                                let w = Int(kw[k + i]), p = row + (first + i) * 3
                                s0 += Int(src[p]) * w
                                s1 += Int(src[p + 1]) * w
                                s2 += Int(src[p + 2]) * w
                            }
                            let d = (r * pw + o) * 3
                            dst[d] = clip8(s0)
                            dst[d + 1] = clip8(s1)
                            dst[d + 2] = clip8(s2)
                        }
                    }
                }
            }
        }
        // Whole rows at a time, in 32 bits (a byte times weights summing to 2^22 fits), so that
        // the compiler vectorises the inner loop.
        var out = [UInt8](repeating: 0, count: ph * pw * 3)
        var sums = [Int32](repeating: 0, count: pw * 3)
        middle.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                sums.withUnsafeMutableBufferPointer { acc in
                    for o in 0..<ph {
                        let first = vertical.first[o] - rowFirst, k = o * vertical.stride
                        for x in 0..<acc.count { acc[x] = Int32(half) }
                        for i in 0..<vertical.count[o] {
                            let w = vertical.weights[k + i], row = (first + i) * pw * 3
                            for x in 0..<acc.count { acc[x] &+= Int32(src[row + x]) &* w }
                        }
                        for x in 0..<acc.count { dst[o * pw * 3 + x] = UInt8(clamping: acc[x] >> Int32(precisionBits)) }
                    }
                }
            }
        }
        return RGBImage(unchecked: pw, ph, out)
    }
}
