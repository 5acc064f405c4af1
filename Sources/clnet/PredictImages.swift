import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `clnet predict --task sr|segment`: each image through the model at its own size, the result
/// written as a PNG: the image enlarged by the scale (super-resolution) or its label map in
/// colours (segmentation).
extension Predict {
    func predictImages(_ weightsFile: LoadedWeights) throws {
        guard let outputImages else {
            throw CLNetError.invalidArgument("--task \(taskOptions.task.rawValue) writes images: give --output-images DIR")
        }
        try FileManager.default.createDirectory(atPath: outputImages, withIntermediateDirectories: true)
        let context = try Context(device: try device.select())
        let channels = taskOptions.task == .sr ? Self.channelCount(weightsFile.file) : weightsFile.info?.mean?.count ?? 3
        var cache: (spec: String, size: [Int], executor: Executor, output: Value)? = nil
        for path in images {
            let picture = try ImageFile.read(path)
            var (h, w) = (picture.height, picture.width)
            if taskOptions.task == .sr { (h, w) = (h * taskOptions.scale, w * taskOptions.scale) }
            let input = taskOptions.task == .sr ? try Self.srInput(picture, scale: taskOptions.scale, channels: channels)
                : try Self.segmentationInput(picture, info: weightsFile.info)
            var fill = ["channels": "\(channels)"]
            if taskOptions.task == .segment, let k = Self.classifierClasses(weightsFile.file) { fill["classes"] = "\(k)" }
            let spec = ModelSpec.filling(try weightsFile.model(model), fill)
            if cache == nil || cache!.spec != spec || cache!.size != [h, w] {
                // A square graph: the models take square inputs; a wider image is padded at the right and bottom.
                let side = max(h, w)
                let (graph, output) = try ModelSpec.graph(spec, batch: 1, size: side, loss: false)
                let shape = graph.shape(of: output)
                let fits = taskOptions.task == .sr ? shape == [1, channels, side, side]
                    : shape.rank == 4 && shape.c >= 2 && shape.h == side && shape.w == side
                guard fits else {
                    throw CLNetError.invalidArgument("""
                        --task \(taskOptions.task.rawValue) needs a model that outputs \(taskOptions.task == .sr ? "an image like its input (drrn:)" : "per-pixel class scores (denseaspp:)"); \
                        \(spec) outputs \(shape)
                        """)
                }
                let executor = try Executor(graph: graph, context: context, training: false, keep: [output], precision: precision)
                try executor.load(weightsFile.file, ignoring: "optimizer.")
                cache = (spec, [h, w], executor, output)
            }
            let side = max(h, w), c = input.count / (h * w)
            var square = [Float](repeating: 0, count: c * side * side)
            for ch in 0..<c { for y in 0..<h { for x in 0..<w { square[(ch * side + y) * side + x] = input[(ch * h + y) * w + x] } } }
            try cache!.executor.forward(["input": square])
            let out = try cache!.executor.read(cache!.output)
            let rgb = taskOptions.task == .sr ? Self.srImage(out, side: side, height: h, width: w, picture: picture, scale: taskOptions.scale)
                : Self.labelColours(out, side: side, height: h, width: w)
            let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            let file = URL(fileURLWithPath: outputImages).appendingPathComponent(stem + ".png")
            try AtomicFile.write(try PNG.encode(width: w, height: h, rgb: rgb), to: file.path)
            print("\(path) -> \(file.path) (\(w)x\(h))")
        }
    }

    /// The channels of a DRRN's input (its first convolution's), 1 when unknown.
    static func channelCount(_ file: SafeTensors) -> Int {
        file.entries["block0.input.weight"].map { $0.shape[1] } ?? 1
    }

    /// The classes of a per-pixel classifier (DenseASPP's `classification.1`).
    static func classifierClasses(_ file: SafeTensors) -> Int? {
        file.entries["classification.1.weight"].map { $0.shape[0] }
    }

    /// The luma and the two chroma planes of an RGB image (`YCbCr`).
    static func ycbcr(_ p: RGBImage) -> [[Float]] {
        let n = p.width * p.height
        var planes = [[Float]](repeating: [Float](repeating: 0, count: n), count: 3)
        for i in 0..<n {
            let (r, g, b) = (Float(p.pixels[3 * i]) / 255, Float(p.pixels[3 * i + 1]) / 255, Float(p.pixels[3 * i + 2]) / 255)
            planes[0][i] = YCbCr.luma(r, g, b)
            (planes[1][i], planes[2][i]) = YCbCr.chroma(r, g, b)
        }
        return planes
    }

    /// The network's input: the image enlarged by bicubic interpolation, as luminance or RGB.
    static func srInput(_ p: RGBImage, scale: Int, channels: Int) throws -> [Float] {
        let planes: [[Float]] = channels == 1 ? [ycbcr(p)[0]]
            : (0..<3).map { ch in (0..<(p.width * p.height)).map { Float(p.pixels[3 * $0 + ch]) / 255 } }
        return planes.flatMap { Bicubic.resize($0, height: p.height, width: p.width, outHeight: p.height * scale, outWidth: p.width * scale) }
    }

    /// The enlarged image: the network's RGB, or its luminance with the chroma enlarged by
    /// bicubic interpolation.
    static func srImage(_ out: [Float], side: Int, height h: Int, width w: Int, picture: RGBImage, scale: Int) -> [UInt8] {
        let c = out.count / (side * side)
        func at(_ ch: Int, _ i: Int) -> Float { out[(ch * side + i / w) * side + i % w] }
        var rgb = [UInt8](repeating: 0, count: 3 * h * w)
        func byte(_ v: Float) -> UInt8 { UInt8(min(max(v * 255, 0), 255).rounded()) }
        if c == 3 {
            for i in 0..<(h * w) { for ch in 0..<3 { rgb[3 * i + ch] = byte(at(ch, i)) } }
            return rgb
        }
        let chroma = ycbcr(picture).dropFirst().map {
            Bicubic.resize($0, height: picture.height, width: picture.width, outHeight: h, outWidth: w)
        }
        for i in 0..<(h * w) {
            let c = YCbCr.rgb(y: at(0, i), cb: chroma[0][i], cr: chroma[1][i])
            (rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) = (byte(c.r), byte(c.g), byte(c.b))
        }
        return rgb
    }

    /// The image normalised as the weights record (ImageNet's statistics otherwise).
    static func segmentationInput(_ p: RGBImage, info: WeightsInfo?) throws -> [Float] {
        let n = p.width * p.height
        let mean = info?.mean ?? ImageTransform.imageNetMean, std = info?.std ?? ImageTransform.imageNetStd
        // A one-channel model (the synthetic Fashion-MNIST set) reads the image's first channel.
        let channels = mean.count
        return (0..<channels).flatMap { ch in (0..<n).map { (Float(p.pixels[3 * $0 + ch]) / 255 - mean[ch]) / std[ch] } }
    }

    /// Each pixel's class (its first maximum) in a fixed palette: class 0 black, the others
    /// well apart in hue.
    static func labelColours(_ z: [Float], side: Int, height h: Int, width w: Int) -> [UInt8] {
        let k = z.count / (side * side)
        var rgb = [UInt8](repeating: 0, count: 3 * h * w)
        for y in 0..<h {
            for x in 0..<w {
                let colour = palette(SegmentationScore.prediction(z, classes: k, plane: side * side, at: y * side + x))
                for ch in 0..<3 { rgb[3 * (y * w + x) + ch] = colour[ch] }
            }
        }
        return rgb
    }

    /// PASCAL VOC's colour map: class k's bits spread over the high bits of R, G and B.
    static func palette(_ k: Int) -> [UInt8] {
        var (r, g, b) = (0, 0, 0), c = k
        for shift in stride(from: 7, through: 0, by: -1) {
            r |= (c & 1) << shift; g |= (c >> 1 & 1) << shift; b |= (c >> 2 & 1) << shift
            c >>= 3
        }
        return [UInt8(r), UInt8(g), UInt8(b)]
    }
}
