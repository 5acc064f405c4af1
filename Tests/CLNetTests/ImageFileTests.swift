import CLNet
import CPNG
import CTurboJPEG
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Decoding of images the tests write themselves with the libraries CLNet reads them with:
/// TurboJPEG's compressor and libpng's writer.
@Suite("Image decoding")
struct ImageFileTests {
    /// A smooth pattern (JPEG keeps it within a few grey levels) of `channels` bytes per pixel.
    static func pattern(width: Int, height: Int, channels: Int) -> [UInt8] {
        var out: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<channels {
                    out.append(UInt8((40 + 170 * (Double(x) / Double(width) * 0.6 + Double(y) / Double(height) * 0.4)
                                      + Double(c) * 9).rounded()) % 250)
                }
            }
        }
        return out
    }

    static func jpeg(_ pixels: [UInt8], width: Int, height: Int, format: TJPF, subsampling: TJSAMP, quality: Int32 = 95) throws -> [UInt8] {
        let handle = try #require(tjInitCompress())
        defer { tjDestroy(handle) }
        var buffer: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let status = pixels.withUnsafeBufferPointer {
            tjCompress2(handle, $0.baseAddress, Int32(width), 0, Int32(height), Int32(format.rawValue), &buffer, &size,
                        Int32(subsampling.rawValue), quality, 0)
        }
        try #require(status == 0, "tjCompress2: \(String(cString: tjGetErrorStr2(handle)))")
        defer { tjFree(buffer) }
        return Array(UnsafeBufferPointer(start: buffer, count: Int(size)))
    }

    /// A PNG of rows already in the file's sample layout (16-bit samples big-endian).
    static func png(rows: [[UInt8]], width: Int, bitDepth: Int32, colorType: Int32, palette: [png_color] = [],
                    transparency: [UInt8] = [], interlaced: Bool = false) throws -> [UInt8] {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-png-\(UUID().uuidString).png").path
        defer { unlink(path) }
        let file = try #require(fopen(path, "wb"))
        var png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nil, nil, nil)
        var info = png_create_info_struct(png)
        png_init_io(png, file)
        png_set_IHDR(png, info, png_uint_32(width), png_uint_32(rows.count), bitDepth, colorType,
                     interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT)
        if !palette.isEmpty { png_set_PLTE(png, info, palette, Int32(palette.count)) }
        if !transparency.isEmpty { png_set_tRNS(png, info, transparency, Int32(transparency.count), nil) }
        png_write_info(png, info)
        let passes = interlaced ? png_set_interlace_handling(png) : 1
        for _ in 0..<passes {
            for row in rows { row.withUnsafeBufferPointer { png_write_row(png, $0.baseAddress) } }
        }
        png_write_end(png, nil)
        png_destroy_write_struct(&png, &info)
        fclose(file)
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func meanAndWorst(_ a: [UInt8], _ b: [UInt8]) -> (Double, Int) {
        let d = zip(a, b).map { abs(Int($0) - Int($1)) }
        return (Double(d.reduce(0, +)) / Double(max(d.count, 1)), d.max() ?? 0)
    }

    @Test(arguments: [(37, 23, TJSAMP_420), (64, 48, TJSAMP_444), (1, 1, TJSAMP_422)])
    func rgbJPEG(width: Int, height: Int, subsampling: TJSAMP) throws {
        let source = Self.pattern(width: width, height: height, channels: 3)
        let image = try ImageFile.decode(try Self.jpeg(source, width: width, height: height, format: TJPF_RGB, subsampling: subsampling),
                                         name: "rgb.jpg")
        #expect(image.width == width && image.height == height)
        let (mean, worst) = Self.meanAndWorst(image.pixels, source)
        #expect(mean < 2.5 && worst <= 16, "JPEG loss: mean \(mean), worst \(worst) grey levels")
    }

    @Test func grayscaleJPEGBecomesThreeEqualChannels() throws {
        let (w, h) = (29, 17)
        let source = Self.pattern(width: w, height: h, channels: 1)
        let image = try ImageFile.decode(try Self.jpeg(source, width: w, height: h, format: TJPF_GRAY, subsampling: TJSAMP_GRAY),
                                         name: "gray.jpg")
        let r: [UInt8] = stride(from: 0, to: image.pixels.count, by: 3).map { image.pixels[$0] }
        let g: [UInt8] = stride(from: 1, to: image.pixels.count, by: 3).map { image.pixels[$0] }
        let b: [UInt8] = stride(from: 2, to: image.pixels.count, by: 3).map { image.pixels[$0] }
        #expect(r == g && r == b)
        let (mean, worst) = Self.meanAndWorst(r, source)
        #expect(mean < 1.5 && worst <= 8, "mean \(mean), worst \(worst)")
    }

    /// Adobe's convention, which PIL follows: stored values are inverted inks, and RGB is
    /// (255 - ink)(255 - black) / 255.
    @Test func cmykJPEGConvertsAsPILDoes() throws {
        let (w, h) = (24, 16)
        let source = Self.pattern(width: w, height: h, channels: 4).enumerated().map { i, v in i % 4 == 3 ? 255 - v / 3 : v }
        let bytes = try Self.jpeg(source, width: w, height: h, format: TJPF_CMYK, subsampling: TJSAMP_444, quality: 98)
        let image = try ImageFile.decode(bytes, name: "cmyk.jpg")
        var expected: [UInt8] = []
        for p in 0..<(w * h) {
            let k = Double(source[4 * p + 3])
            for c in 0..<3 { expected.append(UInt8((Double(source[4 * p + c]) * k / 255).rounded())) }
        }
        let (mean, worst) = Self.meanAndWorst(image.pixels, expected)
        #expect(mean < 2 && worst <= 10, "mean \(mean), worst \(worst)")
    }

    @Test(arguments: [false, true])
    func rgbPNGIsExact(interlaced: Bool) throws {
        let (w, h) = (13, 9)
        let source = Self.pattern(width: w, height: h, channels: 3)
        let rows = (0..<h).map { Array(source[($0 * w * 3)..<(($0 + 1) * w * 3)]) }
        let image = try ImageFile.decode(try Self.png(rows: rows, width: w, bitDepth: 8, colorType: PNG_COLOR_TYPE_RGB,
                                                      interlaced: interlaced), name: "rgb.png")
        #expect(image.pixels == source)
    }

    /// A 4-bit palette with a transparent entry: the colours are looked up and the transparency
    /// dropped, as PIL's convert("RGB") does.
    @Test func palettePNGLooksUpColours() throws {
        let palette: [png_color] = (0..<16).map { (i: Int) -> png_color in
            png_color(red: UInt8(i * 16), green: UInt8(255 - i * 7), blue: UInt8(i * 3 + 1))
        }
        let (w, h) = (7, 3)
        let index = (0..<(w * h)).map { ($0 * 5) % 16 }
        // Two 4-bit indices per byte, the first in the high nibble; rows end on a byte.
        let rows = (0..<h).map { y in
            stride(from: 0, to: w, by: 2).map { x in
                UInt8(index[y * w + x] << 4 | (x + 1 < w ? index[y * w + x + 1] : 0))
            }
        }
        let image = try ImageFile.decode(try Self.png(rows: rows, width: w, bitDepth: 4, colorType: PNG_COLOR_TYPE_PALETTE,
                                                      palette: palette, transparency: [0, 128]), name: "palette.png")
        let expected = index.flatMap { [palette[$0].red, palette[$0].green, palette[$0].blue] }
        #expect(image.pixels == expected)
    }

    /// Alpha is dropped, not composited: the colour of a fully transparent pixel survives.
    @Test func alphaIsDroppedNotComposited() throws {
        let (w, h) = (5, 4)
        let rgba: [UInt8] = (0..<(w * h)).flatMap { (p: Int) -> [UInt8] in
            [UInt8(p * 11), UInt8(200 - p * 3), UInt8(p * 7 + 5), UInt8(p % 3 == 0 ? 0 : 90)]
        }
        let rows: [[UInt8]] = (0..<h).map { (y: Int) -> [UInt8] in Array(rgba[(y * w * 4)..<((y + 1) * w * 4)]) }
        let image = try ImageFile.decode(try Self.png(rows: rows, width: w, bitDepth: 8, colorType: PNG_COLOR_TYPE_RGB_ALPHA),
                                         name: "alpha.png")
        let colours: [UInt8] = (0..<(w * h)).flatMap { (p: Int) -> [UInt8] in [rgba[4 * p], rgba[4 * p + 1], rgba[4 * p + 2]] }
        #expect(image.pixels == colours)
        // Grey with alpha: the grey copied to three channels.
        let ga: [UInt8] = (0..<(w * h)).flatMap { (p: Int) -> [UInt8] in [UInt8(p * 12), UInt8(p % 2 == 0 ? 0 : 255)] }
        let gaRows: [[UInt8]] = (0..<h).map { (y: Int) -> [UInt8] in Array(ga[(y * w * 2)..<((y + 1) * w * 2)]) }
        let grey = try ImageFile.decode(try Self.png(rows: gaRows, width: w, bitDepth: 8, colorType: PNG_COLOR_TYPE_GRAY_ALPHA),
                                        name: "ga.png")
        let greys: [UInt8] = (0..<(w * h)).flatMap { (p: Int) -> [UInt8] in [UInt8(p * 12), UInt8(p * 12), UInt8(p * 12)] }
        #expect(grey.pixels == greys)
    }

    /// 16-bit colour samples become 8 bits within one grey level of PIL's (which keeps the high
    /// byte). 16-bit grey is scaled the same way, where PIL clips it at 255 (a Pillow bug that
    /// CLNet does not copy; see `ImageFile.decode`).
    @Test func sixteenBitPNG() throws {
        let (w, h) = (6, 5)
        let samples = (0..<(w * h * 3)).map { UInt16(($0 * 2_731 + 17) % 65_536) }
        let rows = (0..<h).map { y in samples[(y * w * 3)..<((y + 1) * w * 3)].flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }
        let image = try ImageFile.decode(try Self.png(rows: rows, width: w, bitDepth: 16, colorType: PNG_COLOR_TYPE_RGB), name: "16.png")
        let (_, worst) = Self.meanAndWorst(image.pixels, samples.map { UInt8($0 >> 8) })
        #expect(worst <= 1, "worst \(worst)")
        let grey = (0..<(w * h)).map { UInt16($0 * 2_000) }
        let g = try ImageFile.decode(try Self.png(rows: (0..<h).map { y in grey[(y * w)..<((y + 1) * w)].flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } },
                                                  width: w, bitDepth: 16, colorType: PNG_COLOR_TYPE_GRAY), name: "16g.png")
        let (_, worstGrey) = Self.meanAndWorst(g.pixels, grey.flatMap { v in [UInt8(v >> 8), UInt8(v >> 8), UInt8(v >> 8)] })
        #expect(worstGrey <= 1, "worst \(worstGrey)")
        // One-bit grey: 0 and 255.
        let bits = try ImageFile.decode(try Self.png(rows: [[0b1010_0000], [0b0101_0000]], width: 4, bitDepth: 1,
                                                     colorType: PNG_COLOR_TYPE_GRAY), name: "1.png")
        #expect(bits.pixels == [255, 0, 255, 0, 0, 255, 0, 255].flatMap { [UInt8($0), UInt8($0), UInt8($0)] })
    }

    /// The format comes from the bytes, whatever the name says.
    @Test func formatByContentNotName() throws {
        let source = Self.pattern(width: 4, height: 4, channels: 3)
        let png = try Self.png(rows: (0..<4).map { Array(source[($0 * 12)..<(($0 + 1) * 12)]) }, width: 4, bitDepth: 8,
                               colorType: PNG_COLOR_TYPE_RGB)
        let jpeg = try Self.jpeg(source, width: 4, height: 4, format: TJPF_RGB, subsampling: TJSAMP_444)
        #expect(ImageFile.format(of: png) == .png && ImageFile.format(of: jpeg) == .jpeg)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-format-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(png).write(to: dir.appendingPathComponent("really-png.jpg"))
        try Data(jpeg).write(to: dir.appendingPathComponent("really-jpeg.png"))
        #expect(try ImageFile.read(dir.appendingPathComponent("really-png.jpg").path).pixels == source)
        #expect(try ImageFile.read(dir.appendingPathComponent("really-jpeg.png").path).width == 4)
    }

    /// libjpeg's warnings about damaged data do not stop a decode, as they do not in PIL: here
    /// two stray bytes before the end-of-image marker.
    @Test func damagedButCompleteJPEGDecodesAsInPIL() throws {
        let source = Self.pattern(width: 16, height: 16, channels: 3)
        let jpeg = try Self.jpeg(source, width: 16, height: 16, format: TJPF_RGB, subsampling: TJSAMP_444)
        try #require(jpeg.suffix(2) == [0xFF, 0xD9])
        let stray = Array(jpeg.dropLast(2)) + [0x00, 0x00, 0xFF, 0xD9]
        #expect(try ImageFile.decode(stray, name: "stray.jpg").pixels == (try ImageFile.decode(jpeg, name: "clean.jpg")).pixels)
    }

    /// Each broken file is a `badImage` error that names it; none crashes.
    @Test func brokenFilesAreRefusedByName() throws {
        let source = Self.pattern(width: 40, height: 30, channels: 3)
        let jpeg = try Self.jpeg(source, width: 40, height: 30, format: TJPF_RGB, subsampling: TJSAMP_420)
        let png = try Self.png(rows: (0..<30).map { Array(source[($0 * 120)..<(($0 + 1) * 120)]) }, width: 40, bitDepth: 8,
                               colorType: PNG_COLOR_TYPE_RGB)
        var corrupt = jpeg
        for i in stride(from: jpeg.count / 2, to: jpeg.count - 2, by: 3) { corrupt[i] = 0xFF }
        var badCRC = png
        badCRC[30] ^= 0x55
        let cases: [(String, [UInt8])] = [
            ("empty.jpg", []), ("text.jpg", Array("hello, world".utf8)), ("truncated.jpg", Array(jpeg.prefix(jpeg.count / 2))),
            ("header-only.jpg", Array(jpeg.prefix(4))), ("corrupt.jpg", corrupt), ("truncated.png", Array(png.prefix(png.count - 20))),
            ("signature-only.png", Array(png.prefix(8))), ("bad-crc.png", badCRC),
        ]
        for (name, bytes) in cases {
            do {
                _ = try ImageFile.decode(bytes, name: name)
                Issue.record("\(name) decoded")
            } catch {
                guard case let .badImage(file, message) = error else { Issue.record("\(name): \(error)"); continue }
                #expect(file == name && !message.isEmpty)
            }
        }
        let missing = #expect(throws: CLNetError.self) { try ImageFile.read("/nonexistent/photo.jpg") }
        #expect("\(missing.map { "\($0)" } ?? "")".contains("/nonexistent/photo.jpg"))
    }
}
