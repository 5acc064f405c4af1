// A minimal PNG encoder (8-bit RGB, no interlace) for the heat maps CLNet draws. zlib, already
// linked for the gzipped data sets, does the compression and the checksums.

import CZlib

/// Encodes RGB images as PNG files.
public enum PNG {
    /// The PNG bytes of a `width` x `height` image, `rgb` row-major with 3 bytes per pixel.
    public static func encode(width: Int, height: Int, rgb: [UInt8]) throws(CLNetError) -> [UInt8] {
        guard width > 0, height > 0, width < 1 << 24, height < 1 << 24, rgb.count == width * height * 3 else {
            throw .invalidArgument("a PNG of \(width)x\(height) RGB pixels needs \(width * height * 3) bytes, got \(rgb.count)")
        }
        // Each row starts with its filter type; 0 (none) is enough for a heat map.
        var raw = [UInt8]()
        raw.reserveCapacity(height * (width * 3 + 1))
        for row in 0..<height {
            raw.append(0)
            raw += rgb[(row * width * 3)..<((row + 1) * width * 3)]
        }
        var size = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(size))
        let status = compressed.withUnsafeMutableBufferPointer { out in
            raw.withUnsafeBufferPointer { compress2(out.baseAddress, &size, $0.baseAddress, uLong($0.count), 9) }
        }
        guard status == Z_OK else { throw .invalidArgument("zlib could not compress the PNG's pixels (status \(status))") }
        compressed.removeLast(compressed.count - Int(size))
        var header = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [8, 2, 0, 0, 0]  // 8 bits per channel, RGB, deflate, adaptive filters, no interlace
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
            + chunk("IHDR", header) + chunk("IDAT", compressed) + chunk("IEND", [])
    }

    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        let crc = body.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
        return bigEndian(UInt32(data.count)) + body + bigEndian(crc)
    }

    private static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }
}
