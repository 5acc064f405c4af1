import CCLBlast
import COpenCL

/// Every failure CLNet reports. The message says what went wrong and, where there is one, what to do.
///
/// OpenCL and CLBlast failures carry the call that failed and the status code's name
/// (`CL_OUT_OF_RESOURCES`, `CLBlastInvalidLeadDimA`), never a bare number.
public enum CLNetError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An OpenCL call returned a status other than `CL_SUCCESS`.
    case openCL(call: String, status: Int32)
    /// A CLBlast routine returned a status other than `CLBlastSuccess`.
    case clblast(call: String, status: Int32)
    /// A kernel file failed to compile; `log` is the compiler's full build log.
    case kernelBuild(file: String, options: String, log: String)
    /// No OpenCL platform or device could be found, or `CLNET_DEVICE` matches none.
    case noDevice(String)
    /// An argument is out of range or inconsistent with another; the message names both.
    case invalidArgument(String)
    /// An operator was given shapes or parameters it cannot work with; names the operator and the shapes.
    case invalidShape(operation: String, message: String)
    /// The device cannot hold what was asked of it: `needed` bytes against the `available` ones
    /// (its memory, or its largest single allocation). The message says what to shrink.
    case outOfDeviceMemory(needed: Int, available: Int, device: String, message: String)
    /// A call came at the wrong time for the object's state (a backward with no fresh forward,
    /// a value that was not kept, an executor that was made for something else).
    case invalidState(String)
    /// A name that is not a parameter of the graph; `message` says which graph or call.
    case unknownParameter(name: String, message: String)
    /// A graph that lacks what the call needs, such as a loss node for training.
    case invalidGraph(String)
    /// Labels that do not fit the logits: the wrong count, or a class out of range.
    case invalidLabels(String)
    /// Training produced a loss that is not finite at `step` (1-based). The checkpoints written
    /// so far are intact.
    case diverged(step: Int, loss: Float, message: String)
    /// An image file that cannot be read or is not a whole JPEG or PNG image; `file` is its path.
    case badImage(file: String, message: String)
    /// An image folder whose layout cannot be trained on: a missing split, an empty class, or
    /// splits whose classes differ.
    case invalidDataset(String)

    public var description: String {
        switch self {
        case let .openCL(call, status):
            var text = "\(call) failed with \(openCLStatusName(status)) (\(status))"
            if let hint = openCLStatusHint(status) { text += ": \(hint)" }
            return text
        case let .clblast(call, status):
            return "\(call) failed with \(clblastStatusName(status)) (\(status))"
        case let .kernelBuild(file, options, log):
            return "building kernel file \(file) with options '\(options)' failed; build log:\n\(log)"
        case let .noDevice(message):
            return message
        case let .invalidArgument(message):
            return message
        case let .invalidShape(operation, message):
            return "\(operation): \(message)"
        case let .outOfDeviceMemory(_, _, _, message):
            return message
        case let .invalidState(message), let .invalidGraph(message), let .invalidLabels(message):
            return message
        case let .unknownParameter(name, message):
            return "parameter \(name): \(message)"
        case let .diverged(_, _, message):
            return message
        case let .badImage(file, message):
            return "\(file): \(message)"
        case let .invalidDataset(message):
            return message
        }
    }
}

/// Throws `CLNetError.openCL` unless `status` is `CL_SUCCESS`.
@inline(__always)
func clCheck(_ status: cl_int, _ call: @autoclosure () -> String) throws(CLNetError) {
    if status != CL_SUCCESS { throw .openCL(call: call(), status: status) }
}

/// Throws `CLNetError.clblast` unless `status` is `CLBlastSuccess`.
@inline(__always)
func blastCheck(_ status: CLBlastStatusCode, _ call: @autoclosure () -> String) throws(CLNetError) {
    if status != CLBlastSuccess { throw .clblast(call: call(), status: status.rawValue) }
}

/// The symbolic name of an OpenCL status code, as the OpenCL headers spell it.
public func openCLStatusName(_ status: Int32) -> String {
    openCLStatusNames[status] ?? "unknown OpenCL status"
}

/// The symbolic name of a CLBlast status code. CLBlast reuses OpenCL's codes for OpenCL failures,
/// so those come back with their OpenCL names.
public func clblastStatusName(_ status: Int32) -> String {
    if let name = clblastStatusNames[status] { return name }
    if let name = openCLStatusNames[status] { return name }
    return "unknown CLBlast status"
}

private func openCLStatusHint(_ status: Int32) -> String? {
    switch status {
    case -4, -61:
        return "the device could not hold the buffer; use a smaller batch or another device (CLNET_DEVICE)"
    case -5, -6:
        return "the device or host ran out of resources; use a smaller batch or free other work on the device"
    case -1001:
        return "no OpenCL driver is installed; on Debian run 'apt-get install pocl-opencl-icd' or your GPU vendor's OpenCL package"
    default:
        return nil
    }
}

private let openCLStatusNames: [Int32: String] = [
    0: "CL_SUCCESS",
    -1: "CL_DEVICE_NOT_FOUND",
    -2: "CL_DEVICE_NOT_AVAILABLE",
    -3: "CL_COMPILER_NOT_AVAILABLE",
    -4: "CL_MEM_OBJECT_ALLOCATION_FAILURE",
    -5: "CL_OUT_OF_RESOURCES",
    -6: "CL_OUT_OF_HOST_MEMORY",
    -7: "CL_PROFILING_INFO_NOT_AVAILABLE",
    -8: "CL_MEM_COPY_OVERLAP",
    -9: "CL_IMAGE_FORMAT_MISMATCH",
    -10: "CL_IMAGE_FORMAT_NOT_SUPPORTED",
    -11: "CL_BUILD_PROGRAM_FAILURE",
    -12: "CL_MAP_FAILURE",
    -13: "CL_MISALIGNED_SUB_BUFFER_OFFSET",
    -14: "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST",
    -15: "CL_COMPILE_PROGRAM_FAILURE",
    -16: "CL_LINKER_NOT_AVAILABLE",
    -17: "CL_LINK_PROGRAM_FAILURE",
    -18: "CL_DEVICE_PARTITION_FAILED",
    -19: "CL_KERNEL_ARG_INFO_NOT_AVAILABLE",
    -30: "CL_INVALID_VALUE",
    -31: "CL_INVALID_DEVICE_TYPE",
    -32: "CL_INVALID_PLATFORM",
    -33: "CL_INVALID_DEVICE",
    -34: "CL_INVALID_CONTEXT",
    -35: "CL_INVALID_QUEUE_PROPERTIES",
    -36: "CL_INVALID_COMMAND_QUEUE",
    -37: "CL_INVALID_HOST_PTR",
    -38: "CL_INVALID_MEM_OBJECT",
    -39: "CL_INVALID_IMAGE_FORMAT_DESCRIPTOR",
    -40: "CL_INVALID_IMAGE_SIZE",
    -41: "CL_INVALID_SAMPLER",
    -42: "CL_INVALID_BINARY",
    -43: "CL_INVALID_BUILD_OPTIONS",
    -44: "CL_INVALID_PROGRAM",
    -45: "CL_INVALID_PROGRAM_EXECUTABLE",
    -46: "CL_INVALID_KERNEL_NAME",
    -47: "CL_INVALID_KERNEL_DEFINITION",
    -48: "CL_INVALID_KERNEL",
    -49: "CL_INVALID_ARG_INDEX",
    -50: "CL_INVALID_ARG_VALUE",
    -51: "CL_INVALID_ARG_SIZE",
    -52: "CL_INVALID_KERNEL_ARGS",
    -53: "CL_INVALID_WORK_DIMENSION",
    -54: "CL_INVALID_WORK_GROUP_SIZE",
    -55: "CL_INVALID_WORK_ITEM_SIZE",
    -56: "CL_INVALID_GLOBAL_OFFSET",
    -57: "CL_INVALID_EVENT_WAIT_LIST",
    -58: "CL_INVALID_EVENT",
    -59: "CL_INVALID_OPERATION",
    -60: "CL_INVALID_GL_OBJECT",
    -61: "CL_INVALID_BUFFER_SIZE",
    -62: "CL_INVALID_MIP_LEVEL",
    -63: "CL_INVALID_GLOBAL_WORK_SIZE",
    -64: "CL_INVALID_PROPERTY",
    -65: "CL_INVALID_IMAGE_DESCRIPTOR",
    -66: "CL_INVALID_COMPILER_OPTIONS",
    -67: "CL_INVALID_LINKER_OPTIONS",
    -68: "CL_INVALID_DEVICE_PARTITION_COUNT",
    -69: "CL_INVALID_PIPE_SIZE",
    -70: "CL_INVALID_DEVICE_QUEUE",
    -71: "CL_INVALID_SPEC_ID",
    -72: "CL_MAX_SIZE_RESTRICTION_EXCEEDED",
    -1001: "CL_PLATFORM_NOT_FOUND_KHR",
]

private let clblastStatusNames: [Int32: String] = [
    0: "CLBlastSuccess",
    -1024: "CLBlastNotImplemented",
    -1022: "CLBlastInvalidMatrixA",
    -1021: "CLBlastInvalidMatrixB",
    -1020: "CLBlastInvalidMatrixC",
    -1019: "CLBlastInvalidVectorX",
    -1018: "CLBlastInvalidVectorY",
    -1017: "CLBlastInvalidDimension",
    -1016: "CLBlastInvalidLeadDimA",
    -1015: "CLBlastInvalidLeadDimB",
    -1014: "CLBlastInvalidLeadDimC",
    -1013: "CLBlastInvalidIncrementX",
    -1012: "CLBlastInvalidIncrementY",
    -1011: "CLBlastInsufficientMemoryA",
    -1010: "CLBlastInsufficientMemoryB",
    -1009: "CLBlastInsufficientMemoryC",
    -1008: "CLBlastInsufficientMemoryX",
    -1007: "CLBlastInsufficientMemoryY",
    -2050: "CLBlastInsufficientMemoryTemp",
    -2049: "CLBlastInvalidBatchCount",
    -2048: "CLBlastInvalidOverrideKernel",
    -2047: "CLBlastMissingOverrideParameter",
    -2046: "CLBlastInvalidLocalMemUsage",
    -2045: "CLBlastNoHalfPrecision",
    -2044: "CLBlastNoDoublePrecision",
    -2043: "CLBlastInvalidVectorScalar",
    -2042: "CLBlastInsufficientMemoryScalar",
    -2041: "CLBlastDatabaseError",
    -2040: "CLBlastUnknownError",
    -2039: "CLBlastUnexpectedError",
]
