// Single-image super-resolution as DRRN's paper sets it up: the network's input is a
// high-resolution image scaled down by bicubic interpolation and back up to its size, and its
// target the high-resolution image itself; results are PSNR and SSIM against it, with plain
// bicubic interpolation's PSNR beside them.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bicubic resampling as MATLAB's `imresize` does it (the SR papers' reference): Keys' cubic with
/// a = -0.5, pixel centres aligned, edges mirrored, and the kernel widened by the factor when
/// shrinking (antialiasing).
public enum Bicubic {
    static func cubic(_ x: Double) -> Double {
        let a = abs(x), a2 = a * a, a3 = a2 * a
        if a <= 1 { return 1.5 * a3 - 2.5 * a2 + 1 }
        if a <= 2 { return -0.5 * a3 + 2.5 * a2 - 4 * a + 2 }
        return 0
    }

    /// For each output index along an axis of `input` to `output` samples: the input indices
    /// and weights that make it.
    static func taps(input: Int, output: Int) -> [[(index: Int, weight: Double)]] {
        let scale = Double(output) / Double(input)
        let shrink = min(scale, 1), width = 4 / shrink
        return (0..<output).map { j in
            let u = (Double(j) + 0.5) / scale - 0.5
            let left = Int((u - width / 2).rounded(.down))
            var taps: [(Int, Double)] = []
            for i in left...(left + Int(width.rounded(.up)) + 1) {
                let w = shrink * cubic(shrink * (u - Double(i)))
                guard w != 0 else { continue }
                // Mirror at the edges (MATLAB's symmetric padding).
                var k = i
                while k < 0 || k >= input { k = k < 0 ? -k - 1 : 2 * input - k - 1 }
                taps.append((k, w))
            }
            let total = taps.reduce(0) { $0 + $1.1 }
            return taps.map { ($0.0, $0.1 / total) }
        }
    }

    /// One `height` x `width` plane resampled to `outHeight` x `outWidth`.
    public static func resize(_ plane: [Float], height: Int, width: Int, outHeight: Int, outWidth: Int) -> [Float] {
        let ty = taps(input: height, output: outHeight), tx = taps(input: width, output: outWidth)
        var rows = [Double](repeating: 0, count: height * outWidth)
        for y in 0..<height {
            for (x, t) in tx.enumerated() { rows[y * outWidth + x] = t.reduce(0) { $0 + $1.weight * Double(plane[y * width + $1.index]) } }
        }
        var out = [Float](repeating: 0, count: outHeight * outWidth)
        for (y, t) in ty.enumerated() {
            for x in 0..<outWidth { out[y * outWidth + x] = Float(t.reduce(0) { $0 + $1.weight * rows[$1.index * outWidth + x] }) }
        }
        return out
    }
}

/// ITU-R BT.601 luma and chroma as MATLAB's `rgb2ycbcr`, on values in 0...1 (Y in
/// 16/255...235/255): what DRRN trains on, and how `clnet predict` puts an enlarged luma back into
/// colour.
public enum YCbCr {
    public static func luma(_ r: Float, _ g: Float, _ b: Float) -> Float { (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255 }

    public static func chroma(_ r: Float, _ g: Float, _ b: Float) -> (cb: Float, cr: Float) {
        ((128 - 37.797 * r - 74.203 * g + 112 * b) / 255, (128 + 112 * r - 93.786 * g - 18.214 * b) / 255)
    }

    /// The inverse, in 0...1 (not clamped).
    public static func rgb(y: Float, cb: Float, cr: Float) -> (r: Float, g: Float, b: Float) {
        let (y, cb, cr) = (y * 255 - 16, cb * 255 - 128, cr * 255 - 128)
        return ((1.164 * y + 1.596 * cr) / 255, (1.164 * y - 0.392 * cb - 0.813 * cr) / 255, (1.164 * y + 2.017 * cb) / 255)
    }
}

/// Super-resolution samples made from any image source: each image (prepared with values in
/// 0...1, cropped to a multiple of `scale`) is the target, and its bicubic reduction by `scale`,
/// enlarged back by bicubic interpolation, the input. With `luminance`, as DRRN trains, images
/// become their luma Y in 16/255...235/255 (ITU-R BT.601 as MATLAB's `rgb2ycbcr`; a gray image
/// is R = G = B), the values `clnet predict` feeds any image in.
public struct SuperResolutionSamples: SampleSource {
    public let base: any SampleSource
    public let scale: Int
    public let luminance: Bool

    public init(base: any SampleSource, scale: Int, luminance: Bool = false) throws(CLNetError) {
        guard (2...8).contains(scale) else { throw .invalidArgument("the super-resolution scale must be 2 to 8, not \(scale)") }
        guard base.height >= 2 * scale, base.width >= 2 * scale else {
            throw .invalidArgument("images of \(base.height)x\(base.width) are too small to reduce \(scale) times")
        }
        guard !luminance || base.channels == 3 || base.channels == 1 else {
            throw .invalidArgument("luminance comes from RGB or gray images, not \(base.channels)-channel ones")
        }
        (self.base, self.scale, self.luminance) = (base, scale, luminance)
    }

    public var count: Int { base.count }
    /// No classes: the target is an image.
    public var classes: Int { 0 }
    public var channels: Int { luminance ? 1 : base.channels }
    public var height: Int { base.height - base.height % scale }
    public var width: Int { base.width - base.width % scale }
    public var targetCount: Int { channels * height * width }
    public var labelsPerSample: Int { 0 }
    public func label(of sample: Int) -> Int { 0 }
    public func file(of sample: Int) -> String? { base.file(of: sample) }

    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator,
                        into out: UnsafeMutableBufferPointer<Float>, offset: Int) throws(CLNetError) {
        var target = [Float](repeating: 0, count: targetCount)
        try target.withUnsafeMutableBufferPointer { t throws(CLNetError) in
            try prepare(sample: index, augment: augment, rng: &rng, input: out, offset: offset, target: t, labels: nil)
        }
    }

    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator, input: UnsafeMutableBufferPointer<Float>,
                        offset: Int, target: UnsafeMutableBufferPointer<Float>?, labels: UnsafeMutableBufferPointer<Int>?) throws(CLNetError) {
        let (c, h, w) = (base.channels, base.height, base.width)
        var image = [Float](repeating: 0, count: c * h * w)
        try image.withUnsafeMutableBufferPointer { b throws(CLNetError) in
            try base.prepare(sample: index, augment: augment, rng: &rng, into: b, offset: 0)
        }
        let (oh, ow) = (height, width)
        var planes: [[Float]] = (0..<c).map { ch in
            (0..<oh * ow).map { i in image[(ch * h + i / ow) * w + i % ow] }
        }
        if luminance {
            planes = [(0..<oh * ow).map { i in c == 3 ? YCbCr.luma(planes[0][i], planes[1][i], planes[2][i])
                                                      : YCbCr.luma(planes[0][i], planes[0][i], planes[0][i]) }]
        }
        for (ch, hr) in planes.enumerated() {
            let low = Bicubic.resize(hr, height: oh, width: ow, outHeight: oh / scale, outWidth: ow / scale)
            let up = Bicubic.resize(low, height: oh / scale, width: ow / scale, outHeight: oh, outWidth: ow)
            for i in 0..<oh * ow {
                input[offset + ch * oh * ow + i] = up[i]
                target?[ch * oh * ow + i] = hr[i]
            }
        }
    }
}

/// Image quality of a super-resolved image against the original, on values in 0...1, with
/// `border` pixels shaved off each side as the SR papers measure (the scale).
public enum ImageQuality {
    /// Peak signal-to-noise ratio in dB of `x` (clamped to 0...1) against `y`.
    public static func psnr(_ x: [Float], _ y: [Float], channels: Int, height: Int, width: Int, border: Int) -> Double {
        var sum = 0.0, n = 0
        for ch in 0..<channels {
            for r in border..<(height - border) {
                for col in border..<(width - border) {
                    let i = (ch * height + r) * width + col
                    let d = Double(min(max(x[i], 0), 1)) - Double(y[i])
                    sum += d * d
                    n += 1
                }
            }
        }
        return 10 * log10(1 / max(sum / Double(max(n, 1)), 1e-12))
    }

    /// Structural similarity (Wang et al. 2004): 11x11 Gaussian windows of sigma 1.5, K1 = 0.01,
    /// K2 = 0.03, averaged over the windows inside the shaved image and over the channels.
    public static func ssim(_ x: [Float], _ y: [Float], channels: Int, height: Int, width: Int, border: Int) -> Double {
        let radius = 5
        let g = (-radius...radius).map { exp(-Double($0 * $0) / (2 * 1.5 * 1.5)) }
        let norm = g.reduce(0, +) * g.reduce(0, +)
        let (c1, c2) = (0.01 * 0.01, 0.03 * 0.03)
        var total = 0.0, windows = 0
        for ch in 0..<channels {
            for r in (border + radius)..<max(border + radius, height - border - radius) {
                for col in (border + radius)..<max(border + radius, width - border - radius) {
                    var mx = 0.0, my = 0.0, xx = 0.0, yy = 0.0, xy = 0.0
                    for dr in -radius...radius {
                        for dc in -radius...radius {
                            let wgt = g[dr + radius] * g[dc + radius] / norm
                            let i = (ch * height + r + dr) * width + col + dc
                            let a = Double(min(max(x[i], 0), 1)), b = Double(y[i])
                            mx += wgt * a; my += wgt * b; xx += wgt * a * a; yy += wgt * b * b; xy += wgt * a * b
                        }
                    }
                    let vx = xx - mx * mx, vy = yy - my * my, cov = xy - mx * my
                    total += (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
                    windows += 1
                }
            }
        }
        return windows > 0 ? total / Double(windows) : 1
    }
}
