import COpenCL
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What OpenCL reports about one device, with the platform it belongs to.
public struct DeviceInfo: Sendable, Codable, Equatable {
    /// Position in `Device.all()`: the number `CLNET_DEVICE` and `--device` take.
    public var index: Int
    public var platformName: String
    public var platformVendor: String
    public var platformVersion: String
    public var name: String
    public var vendor: String
    public var driverVersion: String
    /// `CL_DEVICE_VERSION`, e.g. "OpenCL 3.0 CUDA".
    public var deviceVersion: String
    /// `CL_DEVICE_OPENCL_C_VERSION`, e.g. "OpenCL C 1.2 PoCL": the language the compiler accepts,
    /// which can be older than the platform's version.
    public var openCLCVersion: String
    /// "GPU", "CPU", "accelerator" or "other".
    public var type: String
    public var computeUnits: Int
    public var maxClockMHz: Int
    public var globalMemoryBytes: Int
    public var localMemoryBytes: Int
    public var maxAllocationBytes: Int
    public var maxWorkGroupSize: Int
    /// `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT`: the float vector the device computes on natively
    /// (PoCL: 16 with AVX-512, 8 with AVX2), which sizes the vectors of CLNet's own GEMM.
    public var preferredFloatVectorWidth: Int
}

/// One OpenCL device. Root devices belong to their platform and are never released, so this type
/// owns nothing; a `Context` is what holds OpenCL resources.
public final class Device: @unchecked Sendable, CustomStringConvertible {
    // cl_device_id of a root device is valid for the life of the process and may be used from any
    // thread, hence @unchecked Sendable.
    let id: cl_device_id
    let platform: cl_platform_id
    /// Everything the driver says about the device.
    public let info: DeviceInfo

    init(id: cl_device_id, platform: cl_platform_id, info: DeviceInfo) {
        self.id = id
        self.platform = platform
        self.info = info
    }

    public var description: String { "#\(info.index) \(info.name) (\(info.platformName))" }

    /// True for PoCL, the CPU driver CI runs on.
    public var isPoCL: Bool { info.platformName.contains("Portable Computing Language") }

    /// True where the vendor's driver keeps compiled programs on disk itself, so CLNet's own disk
    /// cache would only duplicate it.
    public var driverCachesPrograms: Bool { info.platformName.uppercased().contains("NVIDIA") }

    /// Every device of every platform, in platform order then device order.
    ///
    /// Discovery runs once per process; OpenCL platforms do not appear while a process runs.
    public static func all() throws(CLNetError) -> [Device] {
        try discovered.get()
    }

    /// The device CLNet uses unless told otherwise: `CLNET_DEVICE` (an index into `all()` or a
    /// case-insensitive substring of the device or platform name) when set, else the first GPU,
    /// else the first device.
    public static var `default`: Device {
        get throws(CLNetError) {
            if let spec = ProcessInfo.processInfo.environment["CLNET_DEVICE"], !spec.isEmpty {
                return try select(spec)
            }
            let devices = try all()
            return devices.first { $0.info.type == "GPU" } ?? devices[0]
        }
    }

    /// The device named by `spec`: an index into `all()`, or a case-insensitive substring of the
    /// device or platform name.
    public static func select(_ spec: String) throws(CLNetError) -> Device {
        let devices = try all()
        let list = devices.map { "\($0)" }.joined(separator: ", ")
        if let index = Int(spec) {
            guard devices.indices.contains(index) else {
                throw .noDevice("no OpenCL device has index \(index); the devices are \(list) (`clnet devices` lists them)")
            }
            return devices[index]
        }
        let needle = spec.lowercased()
        if let match = devices.first(where: {
            $0.info.name.lowercased().contains(needle) || $0.info.platformName.lowercased().contains(needle)
        }) {
            return match
        }
        throw .noDevice("no OpenCL device matches '\(spec)'; give an index or part of a name of \(list)")
    }

    private static let discovered: Result<[Device], CLNetError> = Result { () throws(CLNetError) in
        try discover()
    }

    private static func discover() throws(CLNetError) -> [Device] {
        var platformCount: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &platformCount)
        // The ICD loader answers CL_PLATFORM_NOT_FOUND_KHR when no driver is installed.
        if status == -1001 || platformCount == 0 {
            throw .noDevice("""
                no OpenCL platform found: install a driver (on Debian: 'apt-get install pocl-opencl-icd' for \
                the CPU, or your GPU vendor's OpenCL package) and check /etc/OpenCL/vendors/
                """)
        }
        try clCheck(status, "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try clCheck(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")

        var devices: [Device] = []
        for case let platform? in platforms {
            var deviceCount: cl_uint = 0
            let st = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount)
            if st == CL_DEVICE_NOT_FOUND || deviceCount == 0 { continue }
            try clCheck(st, "clGetDeviceIDs")
            var ids = [cl_device_id?](repeating: nil, count: Int(deviceCount))
            try clCheck(clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &ids, nil),
                        "clGetDeviceIDs")
            let pName = try platformString(platform, CL_PLATFORM_NAME)
            let pVendor = try platformString(platform, CL_PLATFORM_VENDOR)
            let pVersion = try platformString(platform, CL_PLATFORM_VERSION)
            for case let id? in ids {
                let rawType: cl_device_type = try deviceValue(id, CL_DEVICE_TYPE)
                let type: String
                if rawType & cl_device_type(CL_DEVICE_TYPE_GPU) != 0 { type = "GPU" }
                else if rawType & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 { type = "CPU" }
                else if rawType & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 { type = "accelerator" }
                else { type = "other" }
                let info = DeviceInfo(
                    index: devices.count,
                    platformName: pName, platformVendor: pVendor, platformVersion: pVersion,
                    name: try deviceString(id, CL_DEVICE_NAME),
                    vendor: try deviceString(id, CL_DEVICE_VENDOR),
                    driverVersion: try deviceString(id, CL_DRIVER_VERSION),
                    deviceVersion: try deviceString(id, CL_DEVICE_VERSION),
                    openCLCVersion: try deviceString(id, CL_DEVICE_OPENCL_C_VERSION),
                    type: type,
                    computeUnits: Int(try deviceValue(id, CL_DEVICE_MAX_COMPUTE_UNITS) as cl_uint),
                    maxClockMHz: Int(try deviceValue(id, CL_DEVICE_MAX_CLOCK_FREQUENCY) as cl_uint),
                    globalMemoryBytes: Int(try deviceValue(id, CL_DEVICE_GLOBAL_MEM_SIZE) as cl_ulong),
                    localMemoryBytes: Int(try deviceValue(id, CL_DEVICE_LOCAL_MEM_SIZE) as cl_ulong),
                    maxAllocationBytes: Int(try deviceValue(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE) as cl_ulong),
                    maxWorkGroupSize: try deviceValue(id, CL_DEVICE_MAX_WORK_GROUP_SIZE) as Int,
                    preferredFloatVectorWidth: Int(try deviceValue(id, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT) as cl_uint))
                devices.append(Device(id: id, platform: platform, info: info))
            }
        }
        if devices.isEmpty {
            throw .noDevice("OpenCL platforms were found but none has a device; check the driver installation")
        }
        return devices
    }
}

/// A string an OpenCL info query returns: the size first, then the bytes.
private func infoString(_ call: String, _ query: (Int, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int>?) -> cl_int)
    throws(CLNetError) -> String {
    var size = 0
    try clCheck(query(0, nil, &size), call)
    var bytes = [CChar](repeating: 0, count: size + 1)
    try clCheck(bytes.withUnsafeMutableBytes { query(size, $0.baseAddress, nil) }, call)
    return cString(bytes)
}

private func platformString(_ platform: cl_platform_id, _ param: Int32) throws(CLNetError) -> String {
    try infoString("clGetPlatformInfo") { clGetPlatformInfo(platform, cl_platform_info(param), $0, $1, $2) }
}

private func deviceString(_ device: cl_device_id, _ param: Int32) throws(CLNetError) -> String {
    try infoString("clGetDeviceInfo") { clGetDeviceInfo(device, cl_device_info(param), $0, $1, $2) }
}

private func deviceValue<T: FixedWidthInteger>(_ device: cl_device_id, _ param: Int32) throws(CLNetError) -> T {
    var value: T = 0
    try clCheck(clGetDeviceInfo(device, cl_device_info(param), MemoryLayout<T>.size, &value, nil), "clGetDeviceInfo")
    return value
}

/// A NUL-terminated C string buffer as a Swift string, trimmed of the padding some drivers add.
func cString(_ bytes: [CChar]) -> String {
    let end = bytes.firstIndex(of: 0) ?? bytes.count
    let text = String(decoding: bytes[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return text.trimmed()
}

extension String {
    /// The string without leading and trailing whitespace and newlines.
    func trimmed() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
