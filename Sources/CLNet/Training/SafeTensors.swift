#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets}}` (and an optional `__metadata__` of strings), then the
/// raw little-endian data. This is how weights move between CLNet and PyTorch.
///
/// Reading checks everything before trusting it: a truncated file, a header longer than 100 MB or
/// past the end, malformed JSON, an unknown dtype, offsets out of range, overlapping or
/// disagreeing with the shape all throw, naming the file and the tensor; nothing is read out of
/// bounds. Writing goes to a temporary file that is renamed into place, so an interrupted write
/// leaves the previous file intact.
public struct SafeTensors: Sendable {
    /// The element types CLNet reads (F32, F16, BF16 and F64 as Float32; I64, I32 and U8, the
    /// type of image pixels, as integers).
    public enum DType: String, Sendable, Codable {
        case F32, F16, BF16, I64, I32, F64, U8
        var size: Int {
            switch self {
            case .U8: return 1
            case .F16, .BF16: return 2
            case .F32, .I32: return 4
            case .I64, .F64: return 8
            }
        }
    }

    /// One tensor's place in the file.
    public struct Entry: Sendable, Equatable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section.
        public let range: Range<Int>
        public var count: Int { shape.reduce(1, *) }
    }

    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let data: [UInt8]
    private let label: String

    /// The largest header CLNet accepts, as the safetensors format itself does.
    public static let maxHeaderBytes = 100_000_000

    /// Reads and checks the file at `url`.
    public init(contentsOf url: URL) throws(CLNetError) {
        guard let contents = FileManager.default.contents(atPath: url.path) else {
            throw .invalidArgument("cannot read safetensors file \(url.path): it does not exist or is not readable")
        }
        try self.init(bytes: [UInt8](contents), label: url.path)
    }

    /// Parses and checks safetensors bytes; `label` names them in errors.
    public init(bytes: [UInt8], label: String = "safetensors data") throws(CLNetError) {
        func fail(_ message: String) -> CLNetError { .invalidArgument("\(label): \(message)") }
        guard bytes.count >= 8 else { throw fail("is \(bytes.count) bytes long, shorter than the 8-byte header length") }
        let headerLength = bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw fail("declares a header of \(headerLength) bytes, over the 100 MB limit; the file is corrupt or not safetensors")
        }
        guard 8 + Int(headerLength) <= bytes.count else {
            throw fail("declares a header of \(headerLength) bytes but holds only \(bytes.count - 8) after the length; the file is truncated")
        }
        let header = Data(bytes[8..<8 + Int(headerLength)])
        let items: [String: HeaderItem]
        do {
            items = try JSONDecoder().decode([String: HeaderItem].self, from: header)
        } catch {
            throw fail("has a malformed JSON header (\(error))")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = bytes.count - dataStart
        var entries: [String: Entry] = [:], metadata: [String: String] = [:]
        for (name, item) in items {
            switch item {
            case let .metadata(m):
                guard name == "__metadata__" else { throw fail("entry \(name) is not a tensor") }
                metadata = m
            case let .tensor(dtypeName, shape, offsets):
                guard let dtype = DType(rawValue: dtypeName) else {
                    throw fail("tensor \(name) has dtype \(dtypeName); CLNet reads F32, F16, BF16, F64, I64, I32 and U8")
                }
                guard shape.allSatisfy({ $0 >= 0 }), offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
                    throw fail("tensor \(name) has shape \(shape) and offsets \(offsets), which are not valid")
                }
                guard offsets[1] <= dataSize else {
                    throw fail("tensor \(name) ends at byte \(offsets[1]) of a data section of \(dataSize) bytes; the file is truncated")
                }
                var count = 1, overflow = false
                for d in shape where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: d) }
                let (bytesNeeded, tooBig) = count.multipliedReportingOverflow(by: dtype.size)
                guard !overflow, !tooBig else { throw fail("tensor \(name) has shape \(shape), too large to address") }
                guard offsets[1] - offsets[0] == bytesNeeded else {
                    throw fail("tensor \(name) of shape \(shape) and dtype \(dtype) needs \(count * dtype.size) bytes but its offsets span \(offsets[1] - offsets[0])")
                }
                entries[name] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
            }
        }
        let sorted = entries.sorted { $0.value.range.lowerBound < $1.value.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.value.range.upperBound > b.value.range.lowerBound {
            throw fail("tensors \(a.key) and \(b.key) overlap in the data section")
        }
        self.entries = entries
        self.metadata = metadata
        self.data = Array(bytes[dataStart...])
        self.label = label
    }

    /// A tensor as Float32 values (F32, F16, BF16 and F64 convert).
    public func floats(_ name: String) throws(CLNetError) -> [Float] {
        let e = try entry(name)
        let bytes = data[e.range]
        func word<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T {
            var v: T = 0
            for b in 0..<MemoryLayout<T>.size { v |= T(bytes[bytes.startIndex + i * MemoryLayout<T>.size + b]) << (8 * b) }
            return v
        }
        switch e.dtype {
        case .F32: return (0..<e.count).map { Float(bitPattern: word($0, UInt32.self)) }
        case .F64: return (0..<e.count).map { Float(Double(bitPattern: word($0, UInt64.self))) }
        case .BF16: return (0..<e.count).map { Precision.bfloatToFloat(word($0, UInt16.self)) }
        case .F16: return (0..<e.count).map { Precision.halfToFloat(word($0, UInt16.self)) }
        case .I64, .I32, .U8:
            throw .invalidArgument("\(label): tensor \(name) holds integers (\(e.dtype)), not floating-point values")
        }
    }

    /// A tensor of integers (I64, I32 or U8) as Int64 values.
    public func integers(_ name: String) throws(CLNetError) -> [Int64] {
        let e = try entry(name)
        let bytes = data[e.range]
        switch e.dtype {
        case .U8:
            return bytes.map { Int64($0) }
        case .I64:
            return (0..<e.count).map { i in
                Int64(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[bytes.startIndex + i * 8 + $1]) << (8 * UInt64($1)) })
            }
        case .I32:
            return (0..<e.count).map { i in
                Int64(Int32(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[bytes.startIndex + i * 4 + $1]) << (8 * UInt32($1)) }))
            }
        default:
            throw .invalidArgument("\(label): tensor \(name) holds \(e.dtype) values, not integers")
        }
    }

    private func entry(_ name: String) throws(CLNetError) -> Entry {
        guard let e = entries[name] else { throw .invalidArgument("\(label): has no tensor \(name)") }
        return e
    }

    /// Appends integers in little-endian order: one bulk copy on little-endian hosts (checkpoints
    /// of 100 MB are written in milliseconds, not seconds).
    static func appendLittleEndian<T: FixedWidthInteger>(_ values: [T], to body: inout [UInt8]) {
        if 1.littleEndian == 1 {
            values.withUnsafeBytes { body.append(contentsOf: $0) }
        } else {
            for v in values { withUnsafeBytes(of: v.littleEndian) { body += $0 } }
        }
    }

    /// A tensor to write.
    public enum Value: Sendable {
        case float32([Float], shape: [Int])
        /// Float32 values written as F16 or BF16 (`format` .fp16 or .bf16), rounded to nearest even.
        case float16([Float], shape: [Int], format: Precision)
        case int64([Int64], shape: [Int])
    }

    /// Writes `tensors` to `url` atomically: a temporary file in the same folder, flushed to the
    /// disk and renamed over the destination only once complete.
    public static func write(_ tensors: [(name: String, value: Value)], to url: URL,
                             metadata: [String: String] = [:]) throws(CLNetError) {
        var header: [String: HeaderItem] = [:]
        var body: [UInt8] = []
        for (name, value) in tensors.sorted(by: { $0.name < $1.name }) {
            let start = body.count
            switch value {
            case let .float32(values, shape):
                guard values.count == shape.reduce(1, *) else {
                    throw .invalidArgument("tensor \(name): \(values.count) values do not fill shape \(shape)")
                }
                Self.appendLittleEndian(values.map(\.bitPattern), to: &body)
                header[name] = .tensor(dtype: "F32", shape: shape, offsets: [start, body.count])
            case let .float16(values, shape, format):
                guard format != .fp32 else { throw .invalidArgument("tensor \(name): .float16 takes fp16 or bf16, not fp32") }
                guard values.count == shape.reduce(1, *) else {
                    throw .invalidArgument("tensor \(name): \(values.count) values do not fill shape \(shape)")
                }
                Self.appendLittleEndian(format.encode(values), to: &body)
                header[name] = .tensor(dtype: format == .fp16 ? "F16" : "BF16", shape: shape, offsets: [start, body.count])
            case let .int64(values, shape):
                guard values.count == shape.reduce(1, *) else {
                    throw .invalidArgument("tensor \(name): \(values.count) values do not fill shape \(shape)")
                }
                Self.appendLittleEndian(values, to: &body)
                header[name] = .tensor(dtype: "I64", shape: shape, offsets: [start, body.count])
            }
        }
        if !metadata.isEmpty { header["__metadata__"] = .metadata(metadata) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var json: [UInt8]
        do { json = [UInt8](try encoder.encode(header)) } catch {
            throw .invalidArgument("cannot encode the safetensors header: \(error)")
        }
        // The format pads the header with spaces so that the data starts 8-byte aligned.
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes += $0 }
        bytes += json
        bytes += body
        try AtomicFile.write(bytes, to: url.path)
    }

    /// A header entry: a tensor, or the `__metadata__` dictionary of strings.
    enum HeaderItem: Codable, Sendable {
        case tensor(dtype: String, shape: [Int], offsets: [Int])
        case metadata([String: String])

        private enum Keys: String, CodingKey { case dtype, shape, data_offsets }

        init(from decoder: Decoder) throws {
            if let c = try? decoder.container(keyedBy: Keys.self), c.contains(.dtype), c.contains(.shape), c.contains(.data_offsets) {
                self = .tensor(dtype: try c.decode(String.self, forKey: .dtype), shape: try c.decode([Int].self, forKey: .shape),
                               offsets: try c.decode([Int].self, forKey: .data_offsets))
            } else {
                self = .metadata(try decoder.singleValueContainer().decode([String: String].self))
            }
        }

        func encode(to encoder: Encoder) throws {
            switch self {
            case let .tensor(dtype, shape, offsets):
                var c = encoder.container(keyedBy: Keys.self)
                try c.encode(dtype, forKey: .dtype)
                try c.encode(shape, forKey: .shape)
                try c.encode(offsets, forKey: .data_offsets)
            case let .metadata(m):
                var c = encoder.singleValueContainer()
                try c.encode(m)
            }
        }
    }
}
