import COpenCL
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// An OpenCL context on one device: it creates queues and buffers and builds and caches programs.
///
/// One context per device is the intended use: programs are cached per context, so a second build
/// of the same source with the same options in a process returns the program already built.
public final class Context: @unchecked Sendable {
    // OpenCL contexts are thread-safe (OpenCL 1.2, appendix A.2); the mutable program cache is
    // guarded by `programsLock`.
    let handle: cl_context
    /// The device this context runs on.
    public let device: Device
    /// The on-disk program cache, or nil when it is off (`CLNET_CACHE=0`, or a driver that keeps its own).
    public let diskCache: ProgramDiskCache?
    /// The OpenCL objects created through this context and not yet released.
    public let live = LiveObjects()
    /// OpenCL calls made to fail on purpose (`CLNET_FAULT`), for testing failure paths.
    public let faults: FaultInjection
    /// Work items that share one contiguous run in the memory-bound kernels (NL in Common.cl):
    /// 1 on a CPU, where a work item streams its run alone, 64 elsewhere, where interleaved lanes
    /// make a GPU's loads coalesce.
    public let laneCount: Int
    /// Floats per load of the memory-bound kernels (VEC in Common.cl): 4, 8 or 16, from the
    /// device's preferred width (which PoCL's vectoriser would not use on its own); GPUs report
    /// 1 or 4 and get 4.
    public let loadWidth: Int
    // Held while a program builds, so that two threads asking for the same program build it once.
    private let programs = Mutex<[ProgramKey: Program]>([:])

    /// Where a context keeps compiled programs between processes.
    public enum DiskCacheChoice: Sendable {
        /// `ProgramDiskCache.defaultCache(for:)`: on, unless `CLNET_CACHE=0` or the driver keeps its own.
        case automatic
        /// No disk cache for this context.
        case off
        /// This cache.
        case custom(ProgramDiskCache)
    }

    /// Creates a context on `device` (by default `Device.default`). `lanes` overrides
    /// `laneCount` with a power of two the device's work-groups hold, and `loadWidth` the
    /// vector width (4, 8 or 16): the tests run the GPUs' layout on a CPU with them.
    public init(device: Device? = nil, diskCache: DiskCacheChoice = .automatic, lanes: Int? = nil,
                loadWidth: Int? = nil) throws(CLNetError) {
        let device = if let device { device } else { try Device.default }
        self.device = device
        let limit = min(256, device.info.maxWorkGroupSize)
        if let lanes {
            guard lanes > 0, lanes & (lanes - 1) == 0, lanes <= limit else {
                throw .invalidArgument("lanes must be a power of two up to \(limit) on \(device.info.name), not \(lanes)")
            }
        }
        laneCount = lanes ?? (device.info.type == "CPU" ? 1 : min(64, limit))
        if let loadWidth, ![4, 8, 16].contains(loadWidth) {
            throw .invalidArgument("the load width must be 4, 8 or 16 floats, not \(loadWidth)")
        }
        let preferred = device.info.preferredFloatVectorWidth
        self.loadWidth = loadWidth ?? (preferred >= 16 ? 16 : preferred >= 8 ? 8 : 4)
        faults = try FaultInjection(spec: ProcessInfo.processInfo.environment["CLNET_FAULT"] ?? "")
        var id: cl_device_id? = device.id
        var status: cl_int = 0
        guard let ctx = clCreateContext(nil, 1, &id, nil, nil, &status), status == CL_SUCCESS else {
            throw .openCL(call: "clCreateContext(\(device.info.name))", status: status)
        }
        handle = ctx
        switch diskCache {
        case .automatic: self.diskCache = ProgramDiskCache.defaultCache(for: device)
        case .off: self.diskCache = nil
        case let .custom(cache): self.diskCache = cache
        }
    }

    deinit {
        clReleaseContext(handle)
    }

    /// A new in-order command queue with profiling on.
    public func makeQueue() throws(CLNetError) -> CommandQueue {
        try CommandQueue(context: self)
    }

    /// A new device buffer of `bytes` bytes (uninitialised).
    public func buffer(bytes: Int) throws(CLNetError) -> Buffer {
        try Buffer(context: self, bytes: bytes)
    }

    /// A new device buffer of `count` Float32 values (uninitialised).
    public func buffer(floats count: Int) throws(CLNetError) -> Buffer {
        try Buffer(context: self, bytes: count * MemoryLayout<Float>.stride)
    }

    /// The program for one of CLNet's kernel files, specialised by `-D` macros, from the cache
    /// when it has been built before.
    public func program(_ source: KernelSource, defines: [String: String] = [:]) throws(CLNetError) -> Program {
        let macros = defines.sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" }
        return try program(source: source.text, fileName: source.fileName, options: macros.joined(separator: " "))
    }

    /// The program for arbitrary OpenCL C source. `fileName` only labels build logs and errors.
    ///
    /// The options always start with the `-cl-std` the kernels are written for (OpenCL C 1.2, which
    /// every current driver accepts, PoCL's included); `options` follows it.
    public func program(source: String, fileName: String, options: String = "") throws(CLNetError) -> Program {
        let fullOptions = (try languageOption() + " " + options).trimmed()
        let key = ProgramKey(sourceHash: fnv1a64(source), sourceLength: source.utf8.count, options: fullOptions)
        return try programs.withLock { (cache) throws(CLNetError) -> Program in
            if let cached = cache[key] { return cached }
            try faults.check(.build, "clBuildProgram(\(fileName))")
            let built = try Program.build(context: self, source: source, fileName: fileName,
                                          options: fullOptions, diskCache: diskCache)
            cache[key] = built
            return built
        }
    }

    /// Number of programs held by this context's in-memory cache.
    public var cachedProgramCount: Int {
        programs.withLock { $0.count }
    }

    private func languageOption() throws(CLNetError) -> String {
        // "OpenCL C 1.2 PoCL" -> (1, 2). CLNet's kernels are OpenCL C 1.2.
        let parts = device.info.openCLCVersion.split(separator: " ")
        if parts.count >= 3, let version = Double(parts[2]), version < 1.2 {
            throw .noDevice("""
                \(device.info.name) compiles only \(device.info.openCLCVersion); CLNet's kernels need \
                OpenCL C 1.2 or later: choose another device with CLNET_DEVICE
                """)
        }
        return "-cl-std=CL1.2"
    }
}

struct ProgramKey: Hashable {
    var sourceHash: UInt64
    var sourceLength: Int
    var options: String
}

/// Counts of the OpenCL objects a context currently holds, for leak checks and reports.
public final class LiveObjects: Sendable {
    let queues = Atomic<Int>(0)
    let buffers = Atomic<Int>(0)
    let bufferBytes = Atomic<Int>(0)
    let events = Atomic<Int>(0)
    let programs = Atomic<Int>(0)
    let kernels = Atomic<Int>(0)

    /// A snapshot of every count: queues, buffers, bufferBytes, events, programs, kernels.
    public var snapshot: [String: Int] {
        [
            "queues": queues.load(ordering: .relaxed),
            "buffers": buffers.load(ordering: .relaxed),
            "bufferBytes": bufferBytes.load(ordering: .relaxed),
            "events": events.load(ordering: .relaxed),
            "programs": programs.load(ordering: .relaxed),
            "kernels": kernels.load(ordering: .relaxed),
        ]
    }
}

/// FNV-1a, 64 bits: a stable hash (Swift's `Hasher` is seeded per process, so it cannot name files).
func fnv1a64<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash &*= 0x0000_0100_0000_01b3
    }
    return hash
}

func fnv1a64(_ text: String) -> UInt64 { fnv1a64(text.utf8) }
