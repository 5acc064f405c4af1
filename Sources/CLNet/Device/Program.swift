import COpenCL
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A built OpenCL program. Obtain one from `Context.program(_:defines:)`, which caches it.
public final class Program: @unchecked Sendable {
    // cl_program is thread-safe; the kernel table is guarded by `lock`.
    // Neither the context nor the kernels point back here: the context's cache holds its programs,
    // and an OpenCL kernel keeps its cl_program alive by itself, so there is no reference cycle.
    let handle: cl_program
    private let live: LiveObjects
    /// The kernel file's name, for messages.
    public let fileName: String
    /// The build options, `-cl-std` included.
    public let options: String
    /// Where the program came from when it was built.
    public let origin: Origin
    /// Wall-clock seconds that building (or loading) took.
    public let buildSeconds: Double
    private let kernels = Mutex<[String: Kernel]>([:])

    /// How a program was obtained.
    public enum Origin: Sendable, Equatable, CustomStringConvertible {
        /// Compiled from source; `cacheNote` says why the disk cache did not serve it, if it was on.
        case compiled(cacheNote: String?)
        /// Loaded from CLNet's on-disk binary cache.
        case diskCache

        public var description: String {
            switch self {
            case .compiled(nil): return "compiled"
            case let .compiled(note?): return "compiled (\(note))"
            case .diskCache: return "disk cache"
            }
        }
    }

    private init(handle: cl_program, context: Context, fileName: String, options: String, origin: Origin,
                 seconds: Double) {
        self.handle = handle
        live = context.live
        self.fileName = fileName
        self.options = options
        self.origin = origin
        buildSeconds = seconds
        live.programs.add(1, ordering: .relaxed)
    }

    deinit {
        clReleaseProgram(handle)
        live.programs.subtract(1, ordering: .relaxed)
    }

    /// The kernel `name` of this program. The same object is returned on every call; `Kernel`
    /// serialises its own argument setting, so sharing it between threads is safe.
    public func kernel(_ name: String) throws(CLNetError) -> Kernel {
        try kernels.withLock { (table) throws(CLNetError) -> Kernel in
            if let k = table[name] { return k }
            var status: cl_int = 0
            guard let kernel = clCreateKernel(handle, name, &status), status == CL_SUCCESS else {
                throw .openCL(call: "clCreateKernel(\(name) in \(fileName))", status: status)
            }
            let k = Kernel(handle: kernel, name: name, program: fileName, live: live)
            table[name] = k
            return k
        }
    }

    static func build(context: Context, source: String, fileName: String, options: String,
                      diskCache: ProgramDiskCache?) throws(CLNetError) -> Program {
        let clock = ContinuousClock.now
        var note: String? = nil
        if let diskCache {
            switch diskCache.load(source: source, options: options) {
            case let .hit(binary):
                if let handle = try? fromBinary(context: context, binary: binary, options: options) {
                    return Program(handle: handle, context: context, fileName: fileName, options: options,
                                   origin: .diskCache, seconds: seconds(since: clock))
                }
                note = "cached binary rejected by the driver, rebuilt"
            case .miss:
                note = "not in disk cache"
            case let .invalid(reason):
                note = "\(reason), rebuilt"
            }
        }
        let handle = try fromSource(context: context, source: source, fileName: fileName, options: options)
        if let diskCache, let binary = binary(of: handle) {
            diskCache.store(source: source, options: options, binary: binary)
        }
        return Program(handle: handle, context: context, fileName: fileName, options: options,
                       origin: .compiled(cacheNote: note), seconds: seconds(since: clock))
    }

    private static func fromSource(context: Context, source: String, fileName: String,
                                   options: String) throws(CLNetError) -> cl_program {
        var status: cl_int = 0
        var length = source.utf8.count
        let program: cl_program? = source.withCString { text in
            var ptr: UnsafePointer<CChar>? = text
            return clCreateProgramWithSource(context.handle, 1, &ptr, &length, &status)
        }
        guard let program, status == CL_SUCCESS else {
            throw .openCL(call: "clCreateProgramWithSource(\(fileName))", status: status)
        }
        var device: cl_device_id? = context.device.id
        let buildStatus = clBuildProgram(program, 1, &device, options, nil, nil)
        if buildStatus != CL_SUCCESS {
            let log = buildLog(program, device: context.device.id)
            clReleaseProgram(program)
            if buildStatus == CL_BUILD_PROGRAM_FAILURE || !log.isEmpty {
                throw .kernelBuild(file: fileName, options: options, log: log)
            }
            throw .openCL(call: "clBuildProgram(\(fileName), '\(options)')", status: buildStatus)
        }
        return program
    }

    private static func fromBinary(context: Context, binary: [UInt8], options: String) throws(CLNetError) -> cl_program {
        var status: cl_int = 0
        var binaryStatus: cl_int = 0
        var device: cl_device_id? = context.device.id
        var length = binary.count
        let program: cl_program? = binary.withUnsafeBufferPointer { bytes in
            var ptr: UnsafePointer<UInt8>? = bytes.baseAddress
            return clCreateProgramWithBinary(context.handle, 1, &device, &length, &ptr, &binaryStatus, &status)
        }
        guard let program, status == CL_SUCCESS, binaryStatus == CL_SUCCESS else {
            if let program { clReleaseProgram(program) }
            throw .openCL(call: "clCreateProgramWithBinary", status: status != CL_SUCCESS ? status : binaryStatus)
        }
        let buildStatus = clBuildProgram(program, 1, &device, options, nil, nil)
        guard buildStatus == CL_SUCCESS else {
            clReleaseProgram(program)
            throw .openCL(call: "clBuildProgram(binary)", status: buildStatus)
        }
        return program
    }

    private static func binary(of program: cl_program) -> [UInt8]? {
        var size = 0
        guard clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size, &size, nil)
            == CL_SUCCESS, size > 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        let status = bytes.withUnsafeMutableBufferPointer { buffer in
            var ptr: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return clGetProgramInfo(program, cl_program_info(CL_PROGRAM_BINARIES),
                                    MemoryLayout<UnsafeMutablePointer<UInt8>?>.size, &ptr, nil)
        }
        return status == CL_SUCCESS ? bytes : nil
    }

    private static func buildLog(_ program: cl_program, device: cl_device_id) -> String {
        var size = 0
        guard clGetProgramBuildInfo(program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
            == CL_SUCCESS, size > 0 else { return "" }
        var bytes = [CChar](repeating: 0, count: size + 1)
        _ = clGetProgramBuildInfo(program, device, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil)
        return cString(bytes)
    }
}


/// One argument of a kernel launch.
public enum KernelArgument: Sendable {
    case buffer(Buffer)
    /// A buffer of activations in a 16-bit format, passed to the kernel's `store_t` parameters;
    /// the launch builds the kernel for that format (`Precision`).
    case stored(Buffer, Precision)
    case float(Float)
    case int(Int32)
    case uint(UInt32)
    case ushort(UInt16)
    /// `__local` memory of this many bytes.
    case local(bytes: Int)
}

/// A kernel of a built program. Launch it with `CommandQueue.enqueue`.
public final class Kernel: @unchecked Sendable {
    // A cl_kernel's arguments are shared state (OpenCL 1.2, A.2: not thread-safe), so argument
    // setting and enqueueing happen together under `lock`.
    let handle: cl_kernel
    /// The kernel function's name.
    public let name: String
    /// The kernel file it comes from.
    public let fileName: String
    private let live: LiveObjects
    private let lock = Mutex<Void>(())

    init(handle: cl_kernel, name: String, program fileName: String, live: LiveObjects) {
        self.handle = handle
        self.name = name
        self.fileName = fileName
        self.live = live
        live.kernels.add(1, ordering: .relaxed)
    }

    deinit {
        clReleaseKernel(handle)
        live.kernels.subtract(1, ordering: .relaxed)
    }

    /// `CL_KERNEL_WORK_GROUP_SIZE`: the largest work-group this kernel can run with on `device`.
    public func maxWorkGroupSize(on device: Device) throws(CLNetError) -> Int {
        var size = 0
        try clCheck(clGetKernelWorkGroupInfo(handle, device.id, cl_kernel_work_group_info(CL_KERNEL_WORK_GROUP_SIZE),
                                             MemoryLayout<Int>.size, &size, nil), "clGetKernelWorkGroupInfo(\(name))")
        return size
    }

    func withArguments(_ arguments: [KernelArgument], _ body: () throws(CLNetError) -> Event) throws(CLNetError) -> Event {
        try lock.withLock { (_) throws(CLNetError) -> Event in try setArguments(arguments, then: body) }
    }

    private func setArguments(_ arguments: [KernelArgument], then body: () throws(CLNetError) -> Event)
        throws(CLNetError) -> Event {
        for (i, argument) in arguments.enumerated() {
            let index = cl_uint(i)
            let status: cl_int
            switch argument {
            case let .buffer(buffer), let .stored(buffer, _):
                var mem: cl_mem? = buffer.handle
                status = clSetKernelArg(handle, index, MemoryLayout<cl_mem?>.size, &mem)
            case var .float(value):
                status = clSetKernelArg(handle, index, MemoryLayout<Float>.size, &value)
            case var .int(value):
                status = clSetKernelArg(handle, index, MemoryLayout<Int32>.size, &value)
            case var .uint(value):
                status = clSetKernelArg(handle, index, MemoryLayout<UInt32>.size, &value)
            case var .ushort(value):
                status = clSetKernelArg(handle, index, MemoryLayout<UInt16>.size, &value)
            case let .local(bytes):
                status = clSetKernelArg(handle, index, bytes, nil)
            }
            try clCheck(status, "clSetKernelArg(\(name), argument \(i))")
        }
        return try body()
    }
}
