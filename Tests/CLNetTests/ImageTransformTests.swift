@testable import CLNet
import Foundation
import Testing

/// torchvision's transforms, checked on crops computed by hand and on PIL's resize values.
@Suite("Image transforms")
struct ImageTransformTests {
    /// An image whose bytes encode their place: R = x, G = y, B = 7.
    static func positions(width: Int, height: Int) throws -> RGBImage {
        try RGBImage(width: width, height: height, pixels: (0..<(width * height)).flatMap { (p: Int) -> [UInt8] in
            [UInt8(p % width), UInt8(p / width), 7]
        })
    }

    /// With the resize equal to the shorter side, evaluation is a centre crop: of a 9x6 image,
    /// 4x4 from column round(2.5) = 2 (half to even, as Python rounds) and row 1.
    @Test func centreCropByHand() throws {
        let image = try Self.positions(width: 9, height: 6)
        let t = try ImageTransform(size: 4, crop: .center(resize: 6), horizontalFlip: false, mean: [0.5, 0, 0], std: [0.5, 1, 1])
        var rng = SeededGenerator(seed: 0)
        let x = t.tensor(image, rng: &rng)
        for y in 0..<4 {
            for c in 0..<4 {
                #expect(abs(x[y * 4 + c] - (Float(2 + c) / 255 - 0.5) / 0.5) < 1e-6, "R at (\(c), \(y))")
                #expect(abs(x[16 + y * 4 + c] - Float(1 + y) / 255) < 1e-6, "G at (\(c), \(y))")
            }
        }
        #expect(ImageTransform.centerBox(width: 9, height: 7, size: 4) == (2, 2, 4, 4) as ImageTransform.Box)
        // Resize(256)'s output size truncates the longer side: 500x375 becomes 341x256.
        #expect(ImageTransform.shorterSide(width: 500, height: 375, to: 256) == (341, 256))
        #expect(ImageTransform.shorterSide(width: 375, height: 500, to: 256) == (256, 341))
        #expect(try ImageTransform.evaluation(size: 224).crop == .center(resize: 256))
        #expect(try ImageTransform.evaluation(size: 32).crop == .center(resize: 36))
    }

    /// PIL's antialiased bilinear filter: the taps widen with the reduction.
    @Test func resizeMatchesPIL() throws {
        // Image.fromarray([[0, 100, 200, 250]]).resize((2, 1), BILINEAR) is [[71, 207]] (taps 3/7, 3/7, 1/7).
        let row = try RGBImage(width: 4, height: 1, pixels: [0, 100, 200, 250].flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
        let small = ImageTransform.resize(row, box: (0, 0, 4, 1), width: 2, height: 1)
        #expect(small.pixels == [71, 71, 71, 207, 207, 207])
        // A one-pixel checkerboard reduced 4x is flat grey (PIL gives 127 and 128); a plain
        // bilinear sample would keep pure black and white.
        let board = try RGBImage(width: 64, height: 64, pixels: (0..<(64 * 64)).flatMap { (p: Int) -> [UInt8] in
            let v: UInt8 = (p % 64 + p / 64) % 2 == 0 ? 0 : 255
            return [v, v, v]
        })
        let grey = ImageTransform.resize(board, box: (0, 0, 64, 64), width: 16, height: 16)
        #expect(grey.pixels.allSatisfy { $0 == 127 || $0 == 128 }, "\(Set(grey.pixels).sorted())")
        // Enlarging keeps a constant image constant and hits every output pixel.
        let flat = try RGBImage(width: 3, height: 2, pixels: [UInt8](repeating: 90, count: 18))
        #expect(ImageTransform.resize(flat, box: (0, 0, 3, 2), width: 11, height: 7).pixels == [UInt8](repeating: 90, count: 11 * 7 * 3))
        // The resize reads only its box: a crop's outside does not leak in.
        var framed = try RGBImage(width: 8, height: 8, pixels: [UInt8](repeating: 255, count: 192))
        for y in 2..<6 { for x in 2..<6 { for c in 0..<3 { framed.pixels[(y * 8 + x) * 3 + c] = 10 } } }
        #expect(ImageTransform.resize(framed, box: (2, 2, 4, 4), width: 2, height: 2).pixels == [UInt8](repeating: 10, count: 12))
    }

    /// RandomResizedCrop's regions stay inside the image with the asked area and aspect ratio;
    /// when ten tries fail, it takes the centre region of the nearest ratio.
    @Test func randomResizedCropRegions() throws {
        var rng = SeededGenerator(seed: 11)
        var areas: [Double] = []
        for _ in 0..<2000 {
            let b = ImageTransform.randomResizedBox(width: 500, height: 375, scale: 0.08...1, ratio: 0.75...(4.0 / 3), rng: &rng)
            #expect(b.x >= 0 && b.y >= 0 && b.x + b.width <= 500 && b.y + b.height <= 375 && b.width > 0 && b.height > 0)
            let area = Double(b.width * b.height) / (500 * 375), aspect = Double(b.width) / Double(b.height)
            // Rounding each side to whole pixels moves the area and ratio a little.
            #expect(area > 0.075 && area <= 1 && aspect > 0.74 && aspect < 1.35, "\(b)")
            areas.append(area)
        }
        let mean = areas.reduce(0, +) / Double(areas.count)
        #expect(mean > 0.4 && mean < 0.6, "the area is uniform in [0.08, 1] where it fits: mean \(mean)")
        // 100x10 with the whole area: every try is too tall, so the fallback: height 10,
        // width round(10 * 4/3) = 13, centred at column (100 - 13) / 2 = 43.
        let fallback = ImageTransform.randomResizedBox(width: 100, height: 10, scale: 1...1, ratio: 0.75...(4.0 / 3), rng: &rng)
        #expect(fallback == (43, 0, 13, 10) as ImageTransform.Box)
        // Inside the ratio, the whole image.
        #expect(ImageTransform.randomResizedBox(width: 30, height: 30, scale: 1...1, ratio: 1...1, rng: &rng) == (0, 0, 30, 30) as ImageTransform.Box)
    }

    /// The training transform flips about half the images, and the same seed gives the same tensor.
    @Test func flipsAndDeterminism() throws {
        let image = try Self.positions(width: 6, height: 6)
        let t = try ImageTransform(size: 6, crop: .randomResized(scale: 1...1, ratio: 1...1), horizontalFlip: true,
                                   mean: [0, 0, 0], std: [1, 1, 1])
        var flipped = 0
        for seed in 0..<200 {
            var a = SeededGenerator(seed: UInt64(seed)), b = SeededGenerator(seed: UInt64(seed))
            let x = t.tensor(image, rng: &a)
            #expect(x == t.tensor(image, rng: &b))
            let firstRow = (0..<6).map { Int((x[$0] * 255).rounded()) }
            if firstRow == [5, 4, 3, 2, 1, 0] { flipped += 1 } else { #expect(firstRow == [0, 1, 2, 3, 4, 5]) }
        }
        #expect(flipped > 70 && flipped < 130, "\(flipped) of 200 flipped")
    }

    @Test func badSettingsAreRefused() {
        #expect(throws: CLNetError.self) { try ImageTransform.training(size: 0) }
        #expect(throws: CLNetError.self) { try ImageTransform.evaluation(size: 224, mean: [0.5], std: [0.2]) }
        #expect(throws: CLNetError.self) { try ImageTransform.evaluation(size: 224, std: [0.2, 0, 0.2]) }
        #expect(throws: CLNetError.self) { try ImageTransform(size: 8, crop: .center(resize: 4), horizontalFlip: false) }
        #expect(throws: CLNetError.self) {
            try ImageTransform(size: 8, crop: .randomResized(scale: 0...1, ratio: 0.75...1.33), horizontalFlip: false)
        }
    }
}
