// Decoding JPEG (libjpeg-turbo's TurboJPEG API) and PNG (libpng) files into 8-bit RGB, as PIL's
// `Image.open(f).convert("RGB")` does for torchvision's ImageFolder, so that a model trained in
// PyTorch sees the same pixels here.

import CPNG
import CTurboJPEG
import FoundationEssentials

/// An 8-bit RGB image: rows top to bottom, three bytes (R, G, B) per pixel.
public struct RGBImage: Sendable, Equatable {
    public let width: Int, height: Int
    /// `height * width * 3` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) throws(CLNetError) {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw .invalidArgument("an RGB image of \(width)x\(height) needs \(max(width * height * 3, 0)) bytes, not \(pixels.count)")
        }
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// For sizes the caller has just computed the pixels of.
    init(unchecked width: Int, _ height: Int, _ pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Reads image files. The format is told by the file's first bytes, not its name: ImageNet has
/// PNG files named `.jpg`.
public enum ImageFile {
    /// The formats CLNet decodes.
    public enum Format: String, Sendable {
        case jpeg, png
    }

    /// A decoded image is refused beyond this many pixels (134 M, an 11,585-pixel square), so
    /// that a corrupt or hostile header cannot ask for gigabytes.
    public static let maximumPixels = 1 << 27

    /// The most RGB bytes a file of each format may decode to per byte of the file. A uniform
    /// 4000 x 4000 image, the best case of each, comes to 192-256 for JPEG and 23,700 for a
    /// 1-bit or palette PNG (deflate's own limit is 1,032 on the packed samples); a header that
    /// claims more than 8 and 2.5 times that is refused before its pixels are allocated.
    static let jpegExpansion = 2_000, pngExpansion = 60_000

    static func checkExpansion(_ decoded: Int, _ fileBytes: Int, ratio: Int, _ format: String, _ name: String) throws(CLNetError) {
        guard decoded <= max(fileBytes, 64) * ratio else {
            throw .badImage(file: name, message: """
                its header claims \(decoded / 3) pixels, more than a \(format) file of \(fileBytes) bytes can hold; the file is corrupt
                """)
        }
    }

    /// The format of a file that starts with `bytes`, or nil when it is neither.
    public static func format(of bytes: [UInt8]) -> Format? {
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        if bytes.count >= 8, bytes[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        return nil
    }

    /// Reads and decodes the file at `path`.
    public static func read(_ path: String) throws(CLNetError) -> RGBImage {
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .badImage(file: path, message: "there is no such file")
        }
        guard !isDirectory else { throw .badImage(file: path, message: "is a folder, not an image file") }
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw .badImage(file: path, message: "cannot be read; check its permissions (or the disk)")
        }
        return try decode(bytes, name: path)
    }

    /// Decodes a JPEG or PNG file's bytes; `name` is the file named in errors.
    ///
    /// Every colour type becomes RGB as PIL's `convert("RGB")` makes it: grayscale is copied to
    /// the three channels, palettes are looked up, alpha is dropped (not composited), CMYK
    /// JPEGs are read with Adobe's inverted convention. Like PIL, a JPEG decodes despite
    /// libjpeg's warnings about damaged data, but not when it ends early.
    ///
    /// Three differences remain, all in PNG:
    /// - 16-bit samples are scaled to 8 bits with rounding, where PIL keeps the high byte of
    ///   colour samples: at most one grey level apart.
    /// - 16-bit grayscale is scaled the same way. PIL opens it as 32-bit integers and clips
    ///   them at 255 when it converts to RGB, which makes such images nearly white (Pillow
    ///   issues 2574 and 5991); CLNet does not copy that.
    /// - A gAMA chunk other than sRGB's is applied by libpng, where PIL ignores it.
    public static func decode(_ bytes: [UInt8], name: String) throws(CLNetError) -> RGBImage {
        switch format(of: bytes) {
        case .jpeg?: return try decodeJPEG(bytes, name: name)
        case .png?: return try decodePNG(bytes, name: name)
        case nil:
            throw .badImage(file: name, message: bytes.isEmpty ? "the file is empty"
                            : "not a JPEG or PNG image (its first bytes are neither format's signature)")
        }
    }

    static func decodeJPEG(_ bytes: [UInt8], name: String) throws(CLNetError) -> RGBImage {
        guard let handle = tjInitDecompress() else {
            throw .badImage(file: name, message: "TurboJPEG could not start a decompressor (out of memory?)")
        }
        defer { tjDestroy(handle) }
        func failure(_ what: String) -> CLNetError {
            let reason = tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unknown error"
            return .badImage(file: name, message: "\(what): \(reason); the file is corrupt or truncated")
        }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let header = bytes.withUnsafeBufferPointer {
            tjDecompressHeader3(handle, $0.baseAddress, UInt($0.count), &width, &height, &subsampling, &colorspace)
        }
        guard header == 0 else { throw failure("not a readable JPEG header") }
        let (w, h) = (Int(width), Int(height))
        guard w > 0, h > 0, w * h <= maximumPixels else {
            throw .badImage(file: name, message: "a JPEG of \(w)x\(h) pixels is beyond the \(maximumPixels)-pixel limit")
        }
        try checkExpansion(w * h * 3, bytes.count, ratio: jpegExpansion, "JPEG", name)
        // CMYK and YCCK JPEGs can only be decoded to CMYK; everything else straight to RGB.
        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        var out = [UInt8](repeating: 0, count: w * h * channels)
        let status = bytes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                tjDecompress2(handle, src.baseAddress, UInt(src.count), dst.baseAddress, width, 0, height,
                              Int32(cmyk ? TJPF_CMYK.rawValue : TJPF_RGB.rawValue), 0)
            }
        }
        if status != 0 {
            // libjpeg warns and goes on for damaged data (extraneous bytes, a bad Huffman code),
            // and PIL decodes such files; a file that ends early PIL refuses as truncated, and
            // so does CLNet, so that a half-grey image does not pass silently into training.
            let warning = tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue)
            let message = tjGetErrorStr2(handle).map { String(cString: $0) } ?? ""
            if !warning || message.contains("Premature end") {
                throw failure(warning ? "the JPEG data ends early" : "JPEG data could not be decoded")
            }
        }
        guard cmyk else { return try RGBImage(width: w, height: h, pixels: out) }
        // Adobe's CMYK JPEGs store inverted inks (a stored 255 is no ink). PIL reads them so and
        // converts with (255 - black) - ink * (255 - black) / 255, rounded as below.
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        for p in 0..<(w * h) {
            let keep = Int(out[4 * p + 3])
            for c in 0..<3 {
                let t = (255 - Int(out[4 * p + c])) * keep + 128
                rgb[3 * p + c] = UInt8(clamping: keep - ((t + (t >> 8)) >> 8))
            }
        }
        return try RGBImage(width: w, height: h, pixels: rgb)
    }

    static func decodePNG(_ bytes: [UInt8], name: String) throws(CLNetError) -> RGBImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        func failure(_ what: String) -> CLNetError {
            let reason = withUnsafeBytes(of: image.message) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            return .badImage(file: name, message: "\(what): \(reason); the file is corrupt or truncated")
        }
        let begun = bytes.withUnsafeBufferPointer { png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }
        guard begun != 0 else { throw failure("not a readable PNG header") }
        let (w, h) = (Int(image.width), Int(image.height))
        guard w > 0, h > 0, w * h <= maximumPixels else {
            throw .badImage(file: name, message: "a PNG of \(w)x\(h) pixels is beyond the \(maximumPixels)-pixel limit")
        }
        try checkExpansion(w * h * 3, bytes.count, ratio: pngExpansion, "PNG", name)
        // RGBA keeps the colour under transparent pixels, which PIL's convert("RGB") keeps too;
        // asking libpng for RGB would composite onto black instead. 16-bit files are taken as
        // sRGB, not linear, so their samples are scaled, not gamma-encoded.
        image.format = UInt32(PNG_FORMAT_FLAG_COLOR | PNG_FORMAT_FLAG_ALPHA)
        image.flags |= UInt32(PNG_IMAGE_FLAG_16BIT_sRGB)
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let finished = rgba.withUnsafeMutableBufferPointer { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard finished != 0 else { throw failure("PNG data could not be decoded") }
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        for p in 0..<(w * h) {
            rgb[3 * p] = rgba[4 * p]
            rgb[3 * p + 1] = rgba[4 * p + 1]
            rgb[3 * p + 2] = rgba[4 * p + 2]
        }
        return try RGBImage(width: w, height: h, pixels: rgb)
    }
}
