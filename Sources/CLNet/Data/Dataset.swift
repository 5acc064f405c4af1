// Image classification data sets in the formats they ship in: MNIST-style IDX files (gzipped or
// not: MNIST, Fashion-MNIST) and the CIFAR-10 / CIFAR-100 binary batches.

import CZlib
import FoundationEssentials

/// Images of one size with integer labels, held as bytes (NCHW, 0-255) until a batch is made.
public struct ImageDataset: Sendable {
    /// Pixels of every image, sample after sample, each channel-major (C x H x W).
    public let pixels: [UInt8]
    public let labels: [Int32]
    public let channels: Int, height: Int, width: Int
    /// Number of classes (labels are 0 ..< classes).
    public let classes: Int

    public var count: Int { labels.count }
    public var sampleBytes: Int { channels * height * width }

    /// Without the checks, for slices of a data set that passed them.
    private init(checked pixels: [UInt8], labels: [Int32], channels: Int, height: Int, width: Int, classes: Int) {
        self.pixels = pixels
        self.labels = labels
        self.channels = channels
        self.height = height
        self.width = width
        self.classes = classes
    }

    public init(pixels: [UInt8], labels: [Int32], channels: Int, height: Int, width: Int, classes: Int) throws(CLNetError) {
        guard channels > 0, height > 0, width > 0, classes > 0, pixels.count == labels.count * channels * height * width else {
            throw .invalidArgument("""
                a data set of \(labels.count) labels and \(channels)x\(height)x\(width) images needs \
                \(labels.count * channels * height * width) pixels, not \(pixels.count)
                """)
        }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= classes }) {
            throw .invalidArgument("label \(bad) is outside 0 ..< \(classes)")
        }
        self.init(checked: pixels, labels: labels, channels: channels, height: height, width: width, classes: classes)
    }

    /// The first `n` samples (all if there are fewer): for quick runs and tests.
    public func prefix(_ n: Int) -> ImageDataset {
        let k = min(max(n, 0), count)
        return ImageDataset(checked: Array(pixels[0..<k * sampleBytes]), labels: Array(labels[0..<k]),
                                 channels: channels, height: height, width: width, classes: classes)
    }

    /// Per-channel mean and standard deviation of the pixels, scaled to 0...1, as normalisation uses them.
    public func channelStatistics() -> (mean: [Float], std: [Float]) {
        Self.channelStatistics(pixels, count: count, channels: channels, plane: height * width)
    }

    /// The same for any `count` images of `channels` planes of `plane` bytes (segmentation's too).
    static func channelStatistics(_ pixels: [UInt8], count: Int, channels: Int, plane: Int) -> (mean: [Float], std: [Float]) {
        var sum = [Double](repeating: 0, count: channels), sq = [Double](repeating: 0, count: channels)
        pixels.withUnsafeBufferPointer { p in
            for i in 0..<count {
                for c in 0..<channels {
                    let base = (i * channels + c) * plane
                    var s = 0, q = 0
                    for j in 0..<plane {
                        let v = Int(p[base + j])
                        s += v
                        q += v * v
                    }
                    sum[c] += Double(s)
                    sq[c] += Double(q)
                }
            }
        }
        let n = Double(max(count * plane, 1))
        let mean = sum.map { $0 / n / 255 }
        let std = zip(sq, mean).map { (($0 / n / 65025) - $1 * $1).squareRoot() }
        return (mean.map(Float.init), std.map { Float(max($0, 1e-6)) })
    }
}

/// Where a data set comes from, as `--data` takes it: `fashion-mnist[:DIR]`, `mnist:DIR`,
/// `cifar10:DIR`, `cifar100:DIR` or `imagefolder:DIR`.
public enum DataSource: Sendable, Equatable {
    case idx(directory: String, name: String)
    case cifar10(directory: String)
    case cifar100(directory: String)
    /// Photos in torchvision's ImageFolder layout (`ImageFolder`), decoded as they are needed.
    case imageFolder(directory: String)

    /// Where Debian's `dataset-fashion-mnist` package puts Fashion-MNIST.
    public static let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    public init(parsing text: String) throws(CLNetError) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let kind = parts.first ?? "", path = parts.count > 1 ? parts[1] : nil
        switch kind {
        case "fashion-mnist": self = .idx(directory: path ?? Self.fashionMNISTDirectory, name: "fashion-mnist")
        case "mnist":
            guard let path else { throw .invalidArgument("--data mnist needs a folder: mnist:/path/to/mnist") }
            self = .idx(directory: path, name: "mnist")
        case "cifar10", "cifar100":
            guard let path else { throw .invalidArgument("--data \(kind) needs a folder: \(kind):/path/to/cifar") }
            self = kind == "cifar10" ? .cifar10(directory: path) : .cifar100(directory: path)
        case "imagefolder":
            guard let path, !path.isEmpty else {
                throw .invalidArgument("--data imagefolder needs a folder: imagefolder:/path/holding/train/and/val")
            }
            self = .imageFolder(directory: path)
        default:
            throw .invalidArgument(
                "unknown data set '\(text)'; use fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR or imagefolder:DIR")
        }
    }

    /// Whether images of this kind are flipped and cropped in training (CIFAR); digits and
    /// clothes are not augmented.
    public var augments: Bool {
        if case .idx = self { return false }
        return true
    }

    /// The training or test split of an in-memory data set. An image folder is read through
    /// `ImageFolder` and `ImageFolderSamples` instead.
    public func load(train: Bool) throws(CLNetError) -> ImageDataset {
        switch self {
        case .imageFolder:
            throw .invalidArgument("""
                an image folder is decoded as it is read, not loaded whole: this command takes fashion-mnist, mnist, \
                cifar10 or cifar100 (clnet train, eval and predict read image folders)
                """)
        case let .idx(directory, _):
            let prefix = train ? "train" : "t10k"
            return try IDX.dataset(images: try IDX.find(directory, "\(prefix)-images-idx3-ubyte"),
                                   labels: try IDX.find(directory, "\(prefix)-labels-idx1-ubyte"))
        case let .cifar10(directory):
            let files = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
            return try CIFAR.dataset(files: try files.map { f throws(CLNetError) in try CIFAR.find(directory, f) }, classes: 10)
        case let .cifar100(directory):
            return try CIFAR.dataset(files: [try CIFAR.find(directory, train ? "train.bin" : "test.bin")], classes: 100)
        }
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
func readDataFile(_ path: String) throws(CLNetError) -> [UInt8] {
    let bytes: [UInt8]
    do {
        bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
        throw .invalidArgument("cannot read \(path): \(error)")
    }
    guard bytes.count >= 2, bytes[0] == 0x1f, bytes[1] == 0x8b else { return bytes }
    return try gunzip(bytes, label: path)
}

/// Decompresses gzip data (every member) through zlib.
func gunzip(_ input: [UInt8], label: String) throws(CLNetError) -> [UInt8] {
    var stream = z_stream()
    // 16 + MAX_WBITS: expect a gzip header.
    guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw .invalidArgument("\(label): zlib could not start")
    }
    defer { inflateEnd(&stream) }
    var output: [UInt8] = []
    output.reserveCapacity(input.count * 4)
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    var status: Int32 = Z_OK
    var failure: String? = nil
    input.withUnsafeBufferPointer { inp in
        stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
        stream.avail_in = uInt(inp.count)
        repeat {
            chunk.withUnsafeMutableBufferPointer { out in
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                status = inflate(&stream, Z_NO_FLUSH)
                output.append(contentsOf: out[0..<(out.count - Int(stream.avail_out))])
            }
            // Concatenated gzip members continue after the first one's end.
            if status == Z_STREAM_END && stream.avail_in > 0 {
                status = inflateReset(&stream)
            }
            if status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR {
                failure = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                break
            }
            if status == Z_BUF_ERROR && stream.avail_in == 0 { failure = "the file ends in the middle of its data"; break }
        } while status != Z_STREAM_END
    }
    if let failure { throw .invalidArgument("\(label) is not valid gzip data: \(failure); download it again") }
    return output
}

/// MNIST's IDX format: a big-endian magic (0, 0, type 0x08 for bytes, rank), the sizes, then the
/// values.
public enum IDX {
    /// `name` or `name.gz` in `directory`, or an error naming both.
    static func find(_ directory: String, _ name: String) throws(CLNetError) -> String {
        for candidate in [name, name + ".gz", name.replacing("-idx", with: ".idx")] {
            let path = directory + "/" + candidate
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        let hint = directory == DataSource.fashionMNISTDirectory
            ? "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data fashion-mnist:/folder/with/the/idx/files"
            : "give the folder that holds the IDX files (MNIST's names, plain or .gz)"
        throw .invalidArgument("no \(name) or \(name).gz in \(directory); \(hint)")
    }

    /// Parses one IDX file of unsigned bytes: its sizes and values.
    public static func parse(_ bytes: [UInt8], label: String) throws(CLNetError) -> (shape: [Int], values: ArraySlice<UInt8>) {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw .invalidArgument("\(label) is not an IDX file: it must start with two zero bytes")
        }
        guard bytes[2] == 0x08 else {
            throw .invalidArgument("\(label) holds IDX type 0x\(String(bytes[2], radix: 16)); only unsigned bytes (0x08) are read")
        }
        let rank = Int(bytes[3])
        guard (1...4).contains(rank), bytes.count >= 4 + 4 * rank else {
            throw .invalidArgument("\(label): an IDX header of rank \(rank) does not fit in \(bytes.count) bytes")
        }
        var shape: [Int] = []
        for d in 0..<rank {
            let o = 4 + 4 * d
            shape.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        // A size of 0 would let the others be anything (found by fuzzing: 4 billion by 0 images).
        guard shape.allSatisfy({ $0 > 0 }) else {
            throw .invalidArgument("\(label): its IDX header gives sizes \(shape), and a size of 0 holds no data; the file is corrupt")
        }
        let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let start = 4 + 4 * rank
        guard count == bytes.count - start else {
            throw .invalidArgument("""
                \(label): its header gives sizes \(shape) (\(count) values) but it holds \(bytes.count - start); \
                the file is truncated or not what it claims
                """)
        }
        return (shape, bytes[start...])
    }

    /// Parses an IDX file's bytes as they are stored: gunzipped first when they start with
    /// gzip's magic bytes.
    public static func parse(file bytes: [UInt8], label: String) throws(CLNetError) -> (shape: [Int], values: ArraySlice<UInt8>) {
        let plain = bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b ? try gunzip(bytes, label: label) : bytes
        return try parse(plain, label: label)
    }

    /// An images file (N x H x W) and its labels file (N).
    public static func dataset(images: String, labels: String) throws(CLNetError) -> ImageDataset {
        let (imageShape, pixels) = try parse(try readDataFile(images), label: images)
        let (labelShape, labelBytes) = try parse(try readDataFile(labels), label: labels)
        guard imageShape.count == 3 else {
            throw .invalidArgument("\(images): an images file has sizes N x H x W, not \(imageShape)")
        }
        guard labelShape == [imageShape[0]] else {
            throw .invalidArgument("\(labels) has sizes \(labelShape) but \(images) has \(imageShape[0]) images")
        }
        let values = labelBytes.map { Int32($0) }
        return try ImageDataset(pixels: Array(pixels), labels: values, channels: 1, height: imageShape[1],
                                width: imageShape[2], classes: max(10, Int(values.max() ?? 0) + 1))
    }
}

/// The CIFAR binary format: records of a label byte (CIFAR-100: coarse and fine label bytes)
/// and 3 x 32 x 32 pixel bytes.
public enum CIFAR {
    static func find(_ directory: String, _ name: String) throws(CLNetError) -> String {
        for candidate in [directory + "/" + name, directory + "/cifar-10-batches-bin/" + name, directory + "/cifar-100-binary/" + name]
            where FileManager.default.fileExists(atPath: candidate) {
            return candidate
        }
        throw .invalidArgument("no \(name) in \(directory) (nor in its cifar-10-batches-bin or cifar-100-binary folder); download the binary version of CIFAR")
    }

    /// Reads record files of CIFAR-10 (`classes` 10) or CIFAR-100 (fine labels, `classes` 100).
    public static func dataset(files: [String], classes: Int) throws(CLNetError) -> ImageDataset {
        var pixels: [UInt8] = [], labels: [Int32] = []
        for file in files {
            let (p, l) = try records(try readDataFile(file), classes: classes, label: file)
            pixels += p
            labels += l
        }
        return try ImageDataset(pixels: pixels, labels: labels, channels: 3, height: 32, width: 32, classes: classes)
    }

    /// The pixels and labels of one record file's bytes; `label` names it in errors.
    public static func records(_ bytes: [UInt8], classes: Int, label file: String) throws(CLNetError) -> (pixels: [UInt8], labels: [Int32]) {
        let labelBytes = classes == 100 ? 2 : 1, imageBytes = 3 * 32 * 32, record = labelBytes + imageBytes
        var pixels: [UInt8] = [], labels: [Int32] = []
        guard !bytes.isEmpty, bytes.count % record == 0 else {
            throw .invalidArgument("""
                \(file) has \(bytes.count) bytes, not a whole number of \(record)-byte CIFAR-\(classes) records; \
                the file is truncated or of the other CIFAR
                """)
        }
        pixels.reserveCapacity(pixels.count + bytes.count / record * imageBytes)
        for r in stride(from: 0, to: bytes.count, by: record) {
            let label = Int32(bytes[r + labelBytes - 1])
            guard label < classes else {
                throw .invalidArgument("\(file): record \(r / record) has label \(label), outside 0 ..< \(classes)")
            }
            labels.append(label)
            pixels.append(contentsOf: bytes[(r + labelBytes)..<(r + record)])
        }
        return (pixels, labels)
    }
}
