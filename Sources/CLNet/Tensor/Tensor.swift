/// The shape of an NCHW Float32 tensor. Vectors and matrices use fewer dimensions
/// (`[N, C]` for logits, `[C]` for per-channel parameters).
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public var dims: [Int]

    public init(_ dims: [Int]) { self.dims = dims }
    public init(arrayLiteral elements: Int...) { dims = elements }

    /// Number of elements.
    public var count: Int { dims.reduce(1, *) }
    public var rank: Int { dims.count }
    public subscript(i: Int) -> Int { dims[i] }

    /// For a 4-D shape: batch, channels, height, width.
    public var n: Int { dims[0] }
    public var c: Int { dims[1] }
    public var h: Int { dims.count > 2 ? dims[2] : 1 }
    public var w: Int { dims.count > 3 ? dims[3] : 1 }
    /// Elements of one sample: C * H * W (for any rank, the product of all but the first dimension).
    public var sampleCount: Int { dims.dropFirst().reduce(1, *) }

    public var description: String { "[" + dims.map(String.init).joined(separator: ", ") + "]" }
}

/// A tensor on the device: a view of a buffer, stored as Float32 or, for the activations of a
/// mixed-precision executor, in a 16-bit format (`storage`); host reads and writes convert.
///
/// Samples sit `batchStride` elements apart, which may be more than a sample's size: a DenseNet
/// layer's output is a channel slice of its block's buffer (`slice(channels:)`), so producers
/// write into place and concatenation copies nothing. Within a sample the layout is dense.
public struct Tensor: Sendable {
    public let buffer: Buffer
    /// First element, in elements of `storage` from the buffer's start.
    public let offset: Int
    public let shape: Shape
    /// Elements from one sample to the next.
    public let batchStride: Int
    /// The format of its elements.
    public let storage: Precision

    /// A view of `buffer`; throws if it does not fit.
    public init(buffer: Buffer, shape: Shape, offset: Int = 0, batchStride: Int? = nil,
                storage: Precision = .fp32) throws(CLNetError) {
        let stride = batchStride ?? shape.sampleCount
        guard shape.rank >= 1, shape.dims.allSatisfy({ $0 > 0 }) else {
            throw .invalidArgument("tensor shape \(shape) must have positive dimensions")
        }
        guard offset >= 0, stride >= shape.sampleCount,
              offset + (shape[0] - 1) * stride + shape.sampleCount <= buffer.byteCount / storage.bytes
        else {
            throw .invalidArgument("""
                tensor \(shape) at offset \(offset) with batch stride \(stride) does not fit a buffer of \
                \(buffer.byteCount / storage.bytes) \(storage) elements
                """)
        }
        self.buffer = buffer
        self.offset = offset
        self.shape = shape
        self.batchStride = stride
        self.storage = storage
    }

    /// A new dense tensor (uninitialised).
    public init(context: Context, shape: Shape, storage: Precision = .fp32) throws(CLNetError) {
        try self.init(buffer: try context.buffer(bytes: max(shape.count, 1) * storage.bytes), shape: shape, storage: storage)
    }

    /// The same bytes seen as a dense tensor of `storage` elements: a float32 workspace that
    /// holds what kernels read beside 16-bit activations (its offset counted in the new
    /// elements; the elements fit, being no larger).
    public func viewed(as storage: Precision, shape: Shape? = nil) throws(CLNetError) -> Tensor {
        guard storage != self.storage else { return try reshaped(shape ?? self.shape) }
        guard isDense, offset * self.storage.bytes % storage.bytes == 0 else {
            throw .invalidArgument("a \(self.storage) view at offset \(offset)\(isDense ? "" : ", strided,") cannot be seen as \(storage)")
        }
        return try Tensor(buffer: buffer, shape: shape ?? self.shape, offset: offset * self.storage.bytes / storage.bytes,
                          storage: storage)
    }

    /// True when samples follow each other with no gap.
    public var isDense: Bool { batchStride == shape.sampleCount }

    /// Channels `range` of a 4-D tensor, as a view into the same buffer.
    public func slice(channels range: Range<Int>) throws(CLNetError) -> Tensor {
        guard shape.rank == 4, range.lowerBound >= 0, range.upperBound <= shape.c, !range.isEmpty else {
            throw .invalidArgument("channel slice \(range) of a tensor \(shape) is out of range")
        }
        let plane = shape.h * shape.w
        return try Tensor(buffer: buffer, shape: [shape.n, range.count, shape.h, shape.w],
                          offset: offset + range.lowerBound * plane, batchStride: batchStride, storage: storage)
    }

    /// Samples `range` of a tensor, as a view into the same buffer.
    public func slice(samples range: Range<Int>) throws(CLNetError) -> Tensor {
        guard shape.rank >= 1, range.lowerBound >= 0, range.upperBound <= shape[0], !range.isEmpty else {
            throw .invalidArgument("sample slice \(range) of a tensor \(shape) is out of range")
        }
        return try Tensor(buffer: buffer, shape: Shape([range.count] + shape.dims.dropFirst()),
                          offset: offset + range.lowerBound * batchStride, batchStride: batchStride, storage: storage)
    }

    /// The same elements under another shape with the same count (dense tensors only).
    public func reshaped(_ newShape: Shape) throws(CLNetError) -> Tensor {
        guard isDense, newShape.count == shape.count else {
            throw .invalidArgument("cannot reshape \(shape)\(isDense ? "" : " (a strided view)") to \(newShape)")
        }
        return try Tensor(buffer: buffer, shape: newShape, offset: offset, storage: storage)
    }
}

extension CommandQueue {
    /// Uploads `values` (dense NCHW) into `tensor`, rounded to its storage.
    public func write(_ values: [Float], to tensor: Tensor) throws(CLNetError) {
        guard values.count == tensor.shape.count else {
            throw .invalidArgument("writing \(values.count) values into a tensor \(tensor.shape)")
        }
        if tensor.storage == .fp32 { return try writeElements(values, to: tensor) }
        try writeElements(tensor.storage.encode(values), to: tensor)
    }

    /// Downloads `tensor` as dense NCHW values, after all earlier work on this queue.
    public func read(_ tensor: Tensor) throws(CLNetError) -> [Float] {
        if tensor.storage == .fp32 { return try readElements(tensor, as: Float.self) }
        return tensor.storage.decode(try readElements(tensor, as: UInt16.self))
    }

    /// The elements of `tensor` as they are stored (a Float32 or a 16-bit pattern each), one
    /// transfer when dense, one per sample otherwise.
    private func writeElements<T: BitwiseCopyable>(_ values: [T], to tensor: Tensor) throws(CLNetError) {
        if tensor.isDense { return try write(values, to: tensor.buffer, offset: tensor.offset) }
        let per = tensor.shape.sampleCount
        for n in 0..<tensor.shape[0] {
            try write(Array(values[n * per..<(n + 1) * per]), to: tensor.buffer, offset: tensor.offset + n * tensor.batchStride)
        }
    }

    private func readElements<T: BitwiseCopyable>(_ tensor: Tensor, as type: T.Type) throws(CLNetError) -> [T] {
        if tensor.isDense { return try read(tensor.buffer, as: T.self, count: tensor.shape.count, offset: tensor.offset) }
        var out: [T] = []
        out.reserveCapacity(tensor.shape.count)
        for n in 0..<tensor.shape[0] {
            out += try read(tensor.buffer, as: T.self, count: tensor.shape.sampleCount, offset: tensor.offset + n * tensor.batchStride)
        }
        return out
    }

    /// Starts uploading `values` into a dense `tensor`, rounded to its storage (see
    /// `writeAsync(_:to:offset:)`).
    func writeAsync(_ values: [Float], to tensor: Tensor) throws(CLNetError) -> Upload {
        tensor.storage == .fp32 ? try writeAsync(values, to: tensor.buffer, offset: tensor.offset)
            : try writeAsync(tensor.storage.encode(values), to: tensor.buffer, offset: tensor.offset)
    }

    /// A new dense tensor holding `values` (rounded to `storage`).
    public func upload(_ values: [Float], shape: Shape, storage: Precision = .fp32) throws(CLNetError) -> Tensor {
        let t = try Tensor(context: context, shape: shape, storage: storage)
        try write(values, to: t)
        return t
    }
}
