// What every operator family shares: finding its kernels, passing tensors, checking shapes.

extension Context {
    /// Work-group size of the reduction kernels: a power of two that the device accepts.
    var reductionSize: Int {
        var size = 256
        while size > device.info.maxWorkGroupSize { size /= 2 }
        return size
    }

    /// A kernel of one of CLNet's kernel files, built with the standard macros.
    /// `specialised`: further -D macros of the kernel (constant loop bounds a shape fixes), each
    /// set of which is a program of its own; `storage`: the format of its `store_t` buffers.
    func kernel(_ source: KernelSource, _ name: String, specialised: [String: String] = [:],
                storage: Precision = .fp32) throws(CLNetError) -> Kernel {
        var defines = ["RED": "\(reductionSize)", "VEC": "\(loadWidth)", "NL": "\(laneCount)"]
        if let macro = storage.define { defines[macro] = "1" }
        return try program(source, defines: defines.merging(specialised) { a, _ in a }).kernel(name)
    }

    /// `kernel` built for the storage of the 16-bit tensors among `arguments`, if any.
    func kernel(_ source: KernelSource, _ name: String, for arguments: [KernelArgument],
                specialised: [String: String] = [:]) throws(CLNetError) -> Kernel {
        try kernel(source, name, specialised: specialised, storage: try KernelArgument.storage(of: arguments, kernel: name))
    }
}

extension CommandQueue {
    /// Launches an element-wise kernel over `total` work items (the kernels ignore the items past
    /// `total`). The work-group size is fixed: left to the driver, it must divide the global size,
    /// and for a count like ResNet-50's 25,557,032 parameters NVIDIA's driver then picks 8, which
    /// ran the SGD update at a tenth of the copy bandwidth on an H100.
    func launch(_ source: KernelSource, _ name: String, _ arguments: [KernelArgument], total: Int,
                specialised: [String: String] = [:], waitFor: [Event]) throws(CLNetError) -> Event {
        try enqueue(try context.kernel(source, name, for: arguments, specialised: specialised), arguments, global: [total],
                    local: [context.reductionSize], waitFor: waitFor)
    }

    /// Launches a kernel over [N, C, plane] tensors with one work item per element, indexed
    /// (position in the plane, channel, sample): the kernels then need no integer division, which
    /// on a CPU costs more than the memory traffic (ResNet-20's residual additions ran 10x
    /// faster than with one flat index). Each work-group dimension is the largest divisor of its
    /// extent that fits, so that no work-group overhangs the range: those ran 2-3x slower on
    /// PoCL (28x28 planes in groups of 256). Tensors without channels pass `channels: 1`.
    func launchPlanes(_ source: KernelSource, _ name: String, _ arguments: [KernelArgument], plane: Int, channels: Int,
                      batch: Int, specialised: [String: String] = [:], waitFor: [Event]) throws(CLNetError) -> Event {
        // 64: the smallest per-dimension limit of common GPUs (NVIDIA's third dimension).
        let size = context.reductionSize
        let width = largestDivisor(of: plane, atMost: size), height = largestDivisor(of: channels, atMost: min(64, size / width))
        let depth = largestDivisor(of: batch, atMost: min(64, size / (width * height)))
        return try enqueue(try context.kernel(source, name, for: arguments, specialised: specialised), arguments, global: [plane, channels, batch],
                           local: [width, height, depth], waitFor: waitFor)
    }

    /// Launches a kernel that takes its items (runs, parts, tiles, rows) in turn (FOR_EACH_RUN,
    /// FOR_EACH_ITEM in Common.cl and Conv.cl) on a grid of the same size whatever their count,
    /// which the kernel's own arguments give: 16 work-groups per compute unit, enough to balance
    /// the cores of a CPU and to fill a GPU's. A work-group is `Context.laneCount` lanes, or eight
    /// work items with one lane, as PoCL pays per work-group.
    func launchRuns(_ source: KernelSource, _ name: String, _ arguments: [KernelArgument],
                    specialised: [String: String] = [:], waitFor: [Event]) throws(CLNetError) -> Event {
        let lanes = context.laneCount, local = lanes > 1 ? lanes : 8
        let global = 16 * max(1, context.device.info.computeUnits) * local
        return try enqueue(try context.kernel(source, name, for: arguments, specialised: specialised), arguments, global: [global],
                           local: [local], waitFor: waitFor)
    }

    /// Tiles a contiguous run of `length` floats is cut into by the memory-bound kernels: about
    /// 4,096 floats each, so that a few large planes still make work for every core.
    static func tiles(_ length: Int) -> Int { max(1, length / 4096) }

    /// Launches a reduction kernel: `groups` work-groups of `Context.reductionSize` work items.
    func reduce(_ source: KernelSource, _ name: String, _ arguments: [KernelArgument], groups: Int,
                waitFor: [Event]) throws(CLNetError) -> Event {
        let size = context.reductionSize
        let kernel = try context.kernel(source, name, for: arguments)
        // The size is compiled into the kernel (RED); a device may allow less for a given kernel
        // than its general maximum, which would otherwise surface as CL_INVALID_WORK_GROUP_SIZE.
        let limit = try kernel.maxWorkGroupSize(on: context.device)
        guard limit >= size else {
            throw .invalidArgument("""
                kernel \(name) in \(source.fileName) allows work-groups of \(limit) on \(context.device.info.name) \
                but its reduction needs \(size); this device is not supported yet
                """)
        }
        return try enqueue(kernel, arguments, global: [groups * size], local: [size], waitFor: waitFor)
    }
}

extension Tensor {
    /// The three kernel arguments of a tensor: buffer, offset and batch stride (see Common.cl).
    /// Kernels index in 32 bits; a tensor they cannot address throws rather than wraps.
    var arguments: [KernelArgument] {
        get throws(CLNetError) {
            try checkIndexable()
            return [bufferArgument, .uint(UInt32(offset)), .uint(UInt32(batchStride))]
        }
    }

    /// The two kernel arguments of a parameter vector (buffer and offset), which must be dense:
    /// kernels read it as consecutive floats.
    var vectorArguments: [KernelArgument] {
        get throws(CLNetError) {
            guard isDense else {
                throw .invalidShape(operation: "parameter vector", message: "\(shape) is a strided view; parameters must be dense")
            }
            try checkIndexable()
            return [bufferArgument, .uint(UInt32(offset))]
        }
    }

    /// The buffer as a kernel argument: 16-bit tensors as `.stored`, which picks the launch's storage.
    var bufferArgument: KernelArgument { storage == .fp32 ? .buffer(buffer) : .stored(buffer, storage) }

    func checkIndexable() throws(CLNetError) {
        guard buffer.byteCount / storage.bytes <= Int(UInt32.max) else {
            throw .invalidShape(operation: "tensor \(shape)",
                                message: "its buffer holds more than 2^32 floats, beyond the kernels' 32-bit indices; split the batch")
        }
    }
}

/// Kernel indices are 32-bit: fail clearly, naming the operator, rather than wrap.
func checkIndexable(_ operation: String, _ tensors: [Tensor]) throws(CLNetError) {
    for t in tensors where t.buffer.byteCount / t.storage.bytes > Int(UInt32.max) {
        throw .invalidShape(operation: operation,
                            message: "tensor \(t.shape) lives in a buffer of more than 2^32 floats; split the batch")
    }
}

/// The workspace an operator was given, when it is dense and holds at least `least` floats;
/// else throws naming the operator, what it needs (see its `workspaceCount`) and what it got.
func checkedWorkspace(_ operation: String, _ workspace: Tensor?, least: Int) throws(CLNetError) -> Tensor {
    guard let workspace, workspace.isDense, workspace.shape.count >= least else {
        let given = workspace.map { "\($0.shape.count) floats\($0.isDense ? "" : ", strided")" } ?? "none"
        throw .invalidShape(operation: operation, message: "needs a dense workspace of at least \(least) floats (see workspaceCount), got \(given)")
    }
    return workspace
}

/// Throws unless every named shape equals the first.
func checkSameShape(_ operation: String, _ shapes: KeyValuePairs<String, Shape>) throws(CLNetError) {
    guard let first = shapes.first else { return }
    for (name, shape) in shapes where shape != first.value {
        throw .invalidShape(operation: operation,
                            message: "\(name) has shape \(shape) but \(first.key) has shape \(first.value)")
    }
}

/// Throws unless the per-channel tensor `t` (a PReLU's slopes, squeeze-and-excitation's scales)
/// holds the `count` values that input `x` needs; `count` is nil when `x` has no channels to
/// match. `needs` says what `x` needs, for the message.
func checkPerChannel(_ operation: String, _ name: String, _ t: Tensor, count: Int?, of x: Shape,
                     needs: String) throws(CLNetError) {
    guard let count, t.shape.count == count else {
        throw .invalidShape(operation: operation, message: "\(name) has shape \(t.shape) but x \(x) \(needs)")
    }
}

/// Throws unless `shape` has `rank` dimensions.
func checkRank(_ operation: String, _ name: String, _ shape: Shape, _ rank: Int) throws(CLNetError) {
    guard shape.rank == rank else {
        throw .invalidShape(operation: operation, message: "\(name) must have \(rank) dimensions, got \(shape)")
    }
}

extension KernelArgument {
    static func flag(_ value: Bool) -> KernelArgument { .uint(value ? 1 : 0) }

    /// A size or index argument; kernels take them as 32-bit unsigned integers.
    static func count(_ value: Int) throws(CLNetError) -> KernelArgument {
        guard let v = UInt32(exactly: value) else {
            throw .invalidArgument("kernel argument \(value) does not fit the kernels' 32-bit indices")
        }
        return .uint(v)
    }

    /// `count` arguments for each value.
    static func counts(_ values: [Int]) throws(CLNetError) -> [KernelArgument] {
        var out: [KernelArgument] = []
        for v in values { out.append(try count(v)) }
        return out
    }
}
