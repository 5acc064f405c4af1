import COpenCL
import Synchronization

/// An in-order OpenCL command queue with profiling on. A device can have several; work on
/// different queues overlaps unless events order it.
public final class CommandQueue: @unchecked Sendable {
    // OpenCL command queues are thread-safe for enqueueing (OpenCL 1.2, appendix A.2).
    let handle: cl_command_queue
    /// The context the queue belongs to; kept alive as long as the queue is.
    public let context: Context

    /// A command enqueued while recording was on: its name (the kernel, copy or CLBlast call), the
    /// scope its enqueuer set (the executor's task index), and its event.
    public struct RecordedCommand: Sendable {
        public let command: String
        public let scope: Int?
        public let event: Event
    }

    private struct Recording {
        var commands: [RecordedCommand] = []
        var scope: Int?
    }

    /// While recording, every command enqueued on this queue records its event (kernel launches,
    /// copies, and the last kernel of each CLBlast call), so that device time can be summed.
    private let recording = Mutex<Recording?>(nil)

    /// The packed operands of CLNet's GEMM on this queue (see `panelGEMM`), grown to the largest
    /// product so far. One buffer serves every product, as the queue runs them one after another.
    let gemmPacking = Mutex<Buffer?>(nil)

    /// A word for kernels' optional flags that nobody reads (the SGD update's overflow flag
    /// outside loss scaling), made on first use.
    private let unreadFlag = Mutex<Buffer?>(nil)

    func discardedFlag() throws(CLNetError) -> Buffer {
        try unreadFlag.withLock { (held) throws(CLNetError) -> Buffer in
            if let held { return held }
            let made = try context.buffer(bytes: 4)
            held = made
            return made
        }
    }

    /// Starts recording commands, dropping what was recorded before.
    public func startRecording() { recording.withLock { $0 = Recording() } }

    /// Stops recording and returns the commands recorded.
    public func stopRecording() -> [RecordedCommand] {
        recording.withLock { let l = $0?.commands ?? []; $0 = nil; return l }
    }

    /// Tags the commands recorded from now on with `scope` (nil: none), so that their time can be
    /// attributed to the work that enqueued them.
    func setScope(_ scope: Int?) { recording.withLock { $0?.scope = scope } }

    func record(_ label: @autoclosure () -> String, _ event: Event) {
        recording.withLock {
            if $0 != nil { $0!.commands.append(RecordedCommand(command: label(), scope: $0!.scope, event: event)) }
        }
    }

    init(context: Context) throws(CLNetError) {
        var status: cl_int = 0
        let props = cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE)
        guard let queue = clCreateCommandQueue(context.handle, context.device.id, props, &status),
              status == CL_SUCCESS
        else { throw .openCL(call: "clCreateCommandQueue", status: status) }
        handle = queue
        self.context = context
        context.live.queues.add(1, ordering: .relaxed)
    }

    deinit {
        clReleaseCommandQueue(handle)
        context.live.queues.subtract(1, ordering: .relaxed)
    }

    /// Blocks until every command on the queue has finished.
    public func finish() throws(CLNetError) {
        try clCheck(clFinish(handle), "clFinish")
    }

    /// Sends queued commands to the device without waiting for them.
    public func flush() throws(CLNetError) {
        try clCheck(clFlush(handle), "clFlush")
    }

    /// Copies `values` into `buffer` starting at element `offset`, and returns when the copy is done.
    public func write<T: BitwiseCopyable>(_ values: [T], to buffer: Buffer, offset: Int = 0) throws(CLNetError) {
        let bytes = values.count * MemoryLayout<T>.stride
        let start = offset * MemoryLayout<T>.stride
        try checkRange(buffer, start: start, bytes: bytes, what: "write")
        if bytes == 0 { return }
        try context.faults.check(.enqueue, "clEnqueueWriteBuffer(\(bytes) bytes)")
        let status = values.withUnsafeBytes { raw in
            clEnqueueWriteBuffer(handle, buffer.handle, cl_bool(CL_TRUE), start, bytes, raw.baseAddress, 0, nil, nil)
        }
        try clCheck(status, "clEnqueueWriteBuffer(\(bytes) bytes)")
    }

    /// Reads `count` elements of `buffer` from element `offset`, after all earlier work on the queue.
    public func read<T: BitwiseCopyable>(_ buffer: Buffer, as type: T.Type = Float.self, count: Int? = nil,
                                         offset: Int = 0) throws(CLNetError) -> [T] {
        let n = count ?? (buffer.byteCount / MemoryLayout<T>.stride - offset)
        let bytes = n * MemoryLayout<T>.stride
        let start = offset * MemoryLayout<T>.stride
        try checkRange(buffer, start: start, bytes: bytes, what: "read")
        if n == 0 { return [] }
        try context.faults.check(.read, "clEnqueueReadBuffer(\(bytes) bytes)")
        var status: cl_int = 0
        let result = [T](unsafeUninitializedCapacity: n) { storage, initialized in
            status = clEnqueueReadBuffer(handle, buffer.handle, cl_bool(CL_TRUE), start, bytes,
                                         UnsafeMutableRawPointer(storage.baseAddress), 0, nil, nil)
            initialized = status == CL_SUCCESS ? n : 0
        }
        try clCheck(status, "clEnqueueReadBuffer(\(bytes) bytes)")
        return result
    }

    /// Starts copying `values` into `buffer` from element `offset` and returns at once: the values
    /// are staged in memory the returned upload owns, which must live until its event completes.
    func writeAsync<T: BitwiseCopyable>(_ values: [T], to buffer: Buffer, offset: Int = 0) throws(CLNetError) -> Upload {
        let bytes = values.count * MemoryLayout<T>.stride
        let start = offset * MemoryLayout<T>.stride
        try checkRange(buffer, start: start, bytes: bytes, what: "write")
        let staging = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        values.withUnsafeBytes { staging.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        do {
            let event = try withEvent([], "clEnqueueWriteBuffer(\(bytes) bytes, non-blocking)") { _, _, event in
                clEnqueueWriteBuffer(handle, buffer.handle, cl_bool(CL_FALSE), start, bytes, staging, 0, nil, event)
            }
            return Upload(event: event, staging: staging)
        } catch {
            staging.deallocate()
            throw error
        }
    }

    /// Starts copying `bytes` bytes of `buffer` from byte `offset` into `destination` and returns
    /// at once; the memory must stay valid until the returned event completes.
    func readAsync(_ buffer: Buffer, offset: Int, bytes: Int, into destination: UnsafeMutableRawPointer)
        throws(CLNetError) -> Event {
        try checkRange(buffer, start: offset, bytes: bytes, what: "read")
        return try withEvent([], "clEnqueueReadBuffer(\(bytes) bytes, non-blocking)", kind: .read) { _, _, event in
            clEnqueueReadBuffer(handle, buffer.handle, cl_bool(CL_FALSE), offset, bytes, destination, 0, nil, event)
        }
    }

    /// Copies `bytes` bytes between device buffers (which may be the same buffer if the ranges do
    /// not overlap), after the events in `waitFor`.
    @discardableResult
    public func copy(from source: Buffer, sourceOffset: Int = 0, to destination: Buffer, destinationOffset: Int = 0,
                     bytes: Int, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkRange(source, start: sourceOffset, bytes: bytes, what: "copy source")
        try checkRange(destination, start: destinationOffset, bytes: bytes, what: "copy destination")
        return try withEvent(waitFor, "clEnqueueCopyBuffer(\(bytes) bytes)") { count, list, event in
            clEnqueueCopyBuffer(handle, source.handle, destination.handle, sourceOffset, destinationOffset,
                                bytes, count, list, event)
        }
    }

    /// Sets `count` elements of `buffer` from element `offset` to `value`, elements being Float32
    /// or of a 16-bit `storage` (tests fill outputs with NaN so that an element a kernel forgot
    /// to write shows up).
    @discardableResult
    public func fill(_ buffer: Buffer, with value: Float, offset: Int = 0, count: Int? = nil, storage: Precision = .fp32,
                     waitFor: [Event] = []) throws(CLNetError) -> Event {
        let size = storage.bytes
        let n = count ?? (buffer.byteCount / size - offset)
        try checkRange(buffer, start: offset * size, bytes: n * size, what: "fill")
        guard let first = UInt32(exactly: offset), let count = UInt32(exactly: n) else {
            throw .invalidArgument("fill of \(n) elements at \(offset) exceeds the kernel's 32-bit indices")
        }
        let pattern: KernelArgument = storage == .fp32 ? .float(value) : .ushort(storage.encode([value])[0])
        let kernel = try context.program(.util).kernel(storage == .fp32 ? "fill_f32" : "fill_u16")
        return try enqueue(kernel, [.buffer(buffer), .uint(first), .uint(count), pattern],
                           global: [max(n, 1)], waitFor: waitFor)
    }

    /// Launches `kernel` with `arguments` over `global` work items (rounded up to a multiple of
    /// `local` when given), after the events in `waitFor`.
    @discardableResult
    public func enqueue(_ kernel: Kernel, _ arguments: [KernelArgument], global: [Int], local: [Int]? = nil,
                        waitFor: [Event] = []) throws(CLNetError) -> Event {
        guard (1...3).contains(global.count), global.allSatisfy({ $0 > 0 }) else {
            throw .invalidArgument("kernel \(kernel.name): global size \(global) must have 1 to 3 positive entries")
        }
        var globalSize = global
        if let local {
            guard local.count == global.count, local.allSatisfy({ $0 > 0 }) else {
                throw .invalidArgument("kernel \(kernel.name): local size \(local) does not match global size \(global)")
            }
            for d in 0..<global.count { globalSize[d] = (global[d] + local[d] - 1) / local[d] * local[d] }
        }
        return try kernel.withArguments(arguments) { () throws(CLNetError) -> Event in
            try withEvent(waitFor, "clEnqueueNDRangeKernel(\(kernel.name), global \(globalSize))") { count, list, event in
                if let local {
                    return local.withUnsafeBufferPointer { l in
                        clEnqueueNDRangeKernel(handle, kernel.handle, cl_uint(globalSize.count), nil, globalSize,
                                               l.baseAddress, count, list, event)
                    }
                }
                return clEnqueueNDRangeKernel(handle, kernel.handle, cl_uint(globalSize.count), nil, globalSize,
                                              nil, count, list, event)
            }
        }
    }

    /// Makes every command enqueued after this wait for `events` (which may come from other
    /// queues of the same context). Nothing happens when `events` is empty.
    public func barrier(waitFor events: [Event]) throws(CLNetError) {
        guard !events.isEmpty else { return }
        try context.faults.check(.enqueue, "clEnqueueBarrierWithWaitList")
        let list: [cl_event?] = events.map { $0.handle }
        try clCheck(clEnqueueBarrierWithWaitList(handle, cl_uint(list.count), list, nil), "clEnqueueBarrierWithWaitList")
    }

    /// An event that completes when everything enqueued before it (and `waitFor`) has.
    public func marker(waitFor: [Event] = []) throws(CLNetError) -> Event {
        try withEvent(waitFor, "clEnqueueMarkerWithWaitList") { count, list, event in
            clEnqueueMarkerWithWaitList(handle, count, list, event)
        }
    }

    /// Runs an enqueue call with a wait list built from `waitFor` and wraps the event it returns.
    func withEvent(_ waitFor: [Event], _ call: @autoclosure () -> String, kind: FaultInjection.Kind = .enqueue,
                   _ body: (cl_uint, UnsafePointer<cl_event?>?, UnsafeMutablePointer<cl_event?>) -> cl_int)
        throws(CLNetError) -> Event {
        try context.faults.check(kind, call())
        var raw: cl_event? = nil
        let waitList: [cl_event?] = waitFor.map { $0.handle }
        let status = waitList.withUnsafeBufferPointer { list in
            body(cl_uint(list.count), list.isEmpty ? nil : list.baseAddress, &raw)
        }
        try clCheck(status, call())
        guard let raw else { throw .openCL(call: call() + " returned no event", status: CL_INVALID_EVENT) }
        let event = Event(handle: raw, live: context.live)
        record(call(), event)
        return event
    }

    private func checkRange(_ buffer: Buffer, start: Int, bytes: Int, what: String) throws(CLNetError) {
        guard start >= 0, bytes >= 0, start + bytes <= buffer.byteCount else {
            throw .invalidArgument("""
                \(what) of \(bytes) bytes at byte offset \(start) does not fit a buffer of \(buffer.byteCount) bytes
                """)
        }
    }
}

/// The largest divisor of `extent` that is at most `limit` (at least 1): a work-group dimension
/// that tiles its range exactly, as every launch that sizes its own groups wants (on PoCL, groups
/// that overhang the range ran 2-3x slower).
func largestDivisor(of extent: Int, atMost limit: Int) -> Int {
    (1...max(1, min(extent, limit))).last { extent % $0 == 0 }!
}

/// A command's completion event, with its profiling times. Released when the last reference goes.
public final class Event: @unchecked Sendable {
    // cl_event is thread-safe to wait on and query; the class is immutable.
    let handle: cl_event
    private let live: LiveObjects

    init(handle: cl_event, live: LiveObjects) {
        self.handle = handle
        self.live = live
        live.events.add(1, ordering: .relaxed)
    }

    deinit {
        clReleaseEvent(handle)
        live.events.subtract(1, ordering: .relaxed)
    }

    /// Blocks until the command has finished; throws if it failed.
    public func wait() throws(CLNetError) {
        var h: cl_event? = handle
        try clCheck(clWaitForEvents(1, &h), "clWaitForEvents")
    }

    /// True once the command has finished (or failed); never blocks.
    public func isComplete() throws(CLNetError) -> Bool {
        var status: cl_int = 0
        try clCheck(clGetEventInfo(handle, cl_event_info(CL_EVENT_COMMAND_EXECUTION_STATUS), MemoryLayout<cl_int>.size,
                                   &status, nil), "clGetEventInfo")
        return status == CL_COMPLETE || status < 0
    }

    /// Blocks until every event has finished.
    public static func wait(_ events: [Event]) throws(CLNetError) {
        guard !events.isEmpty else { return }
        let handles: [cl_event?] = events.map { $0.handle }
        try clCheck(clWaitForEvents(cl_uint(handles.count), handles), "clWaitForEvents")
    }

    /// Device time from the command's start to its end, in seconds. Waits for the command first.
    public func elapsedSeconds() throws(CLNetError) -> Double {
        try wait()
        let start = try profile(CL_PROFILING_COMMAND_START)
        let end = try profile(CL_PROFILING_COMMAND_END)
        return Double(end &- start) * 1e-9
    }

    /// The device clock at the command's start and end, in nanoseconds. Waits for the command first.
    public func startEndNanoseconds() throws(CLNetError) -> (start: UInt64, end: UInt64) {
        try wait()
        return (try profile(CL_PROFILING_COMMAND_START), try profile(CL_PROFILING_COMMAND_END))
    }

    private func profile(_ param: Int32) throws(CLNetError) -> UInt64 {
        var value: cl_ulong = 0
        try clCheck(clGetEventProfilingInfo(handle, cl_profiling_info(param), MemoryLayout<cl_ulong>.size, &value, nil),
                    "clGetEventProfilingInfo")
        return value
    }
}

/// A host-to-device copy in flight and the host memory it reads, freed once the copy is done.
final class Upload: @unchecked Sendable {
    // The driver reads `staging` until `event` completes; nothing else touches it.
    let event: Event
    private let staging: UnsafeMutableRawPointer

    init(event: Event, staging: UnsafeMutableRawPointer) {
        self.event = event
        self.staging = staging
    }

    deinit {
        try? event.wait()
        staging.deallocate()
    }
}
