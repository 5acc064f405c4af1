import COpenCL

/// A device buffer, released when the last reference goes.
public final class Buffer: @unchecked Sendable {
    // cl_mem handles are thread-safe to use from any thread; this class never mutates after init.
    let handle: cl_mem
    /// Size in bytes.
    public let byteCount: Int
    /// The context the buffer lives in; kept alive as long as the buffer is.
    public let context: Context

    init(context: Context, bytes: Int) throws(CLNetError) {
        guard bytes > 0 else {
            throw .invalidArgument("a device buffer needs at least one byte; asked for \(bytes)")
        }
        let limit = context.device.info.maxAllocationBytes
        guard bytes <= limit else {
            throw .invalidArgument("""
                a buffer of \(bytes) bytes exceeds \(context.device.info.name)'s largest allocation \
                (\(limit) bytes); use a smaller batch or split the tensor
                """)
        }
        try context.faults.check(.alloc, "clCreateBuffer(\(bytes) bytes)")
        var status: cl_int = 0
        guard let mem = clCreateBuffer(context.handle, cl_mem_flags(CL_MEM_READ_WRITE), bytes, nil, &status),
              status == CL_SUCCESS
        else { throw .openCL(call: "clCreateBuffer(\(bytes) bytes)", status: status) }
        handle = mem
        byteCount = bytes
        self.context = context
        context.live.buffers.add(1, ordering: .relaxed)
        context.live.bufferBytes.add(bytes, ordering: .relaxed)
    }

    deinit {
        clReleaseMemObject(handle)
        context.live.buffers.subtract(1, ordering: .relaxed)
        context.live.bufferBytes.subtract(byteCount, ordering: .relaxed)
    }

    /// Size in Float32 elements.
    public var floatCount: Int { byteCount / MemoryLayout<Float>.stride }
}
