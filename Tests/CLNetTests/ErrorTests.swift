import CLNet
import Foundation
import Testing

@Suite("Errors")
struct ErrorTests {
    @Test func everyStatusHasItsName() {
        #expect(openCLStatusName(-5) == "CL_OUT_OF_RESOURCES")
        #expect(openCLStatusName(-4) == "CL_MEM_OBJECT_ALLOCATION_FAILURE")
        #expect(openCLStatusName(-11) == "CL_BUILD_PROGRAM_FAILURE")
        #expect(openCLStatusName(-46) == "CL_INVALID_KERNEL_NAME")
        #expect(openCLStatusName(-63) == "CL_INVALID_GLOBAL_WORK_SIZE")
        #expect(openCLStatusName(-1001) == "CL_PLATFORM_NOT_FOUND_KHR")
        for code in Int32(-72)...(-30) { #expect(openCLStatusName(code).hasPrefix("CL_INVALID") || code == -72) }
        for code in Int32(-19)...(-1) { #expect(openCLStatusName(code).hasPrefix("CL_")) }
        #expect(clblastStatusName(-1016) == "CLBlastInvalidLeadDimA")
        #expect(clblastStatusName(-2049) == "CLBlastInvalidBatchCount")
        #expect(clblastStatusName(-2039) == "CLBlastUnexpectedError")
        #expect(clblastStatusName(-5) == "CL_OUT_OF_RESOURCES")
        for code in Int32(-1024)...(-1007) where code != -1023 {
            #expect(clblastStatusName(code).hasPrefix("CLBlast"))
        }
        for code in Int32(-2050)...(-2039) { #expect(clblastStatusName(code).hasPrefix("CLBlast")) }
    }

    @Test func messagesNameTheCallAndTheStatus() {
        let e = CLNetError.openCL(call: "clCreateBuffer(64 bytes)", status: -4)
        #expect("\(e)".contains("clCreateBuffer(64 bytes)"))
        #expect("\(e)".contains("CL_MEM_OBJECT_ALLOCATION_FAILURE"))
        let b = CLNetError.clblast(call: "CLBlastSgemm(m=1 n=2 k=3)", status: -1016)
        #expect("\(b)".contains("CLBlastInvalidLeadDimA"))
        #expect("\(b)".contains("CLBlastSgemm"))
    }

    /// A kernel with a compile error throws an error that carries the compiler's line, the file
    /// name and the options.
    @Test func brokenKernelThrowsWithBuildLog() throws {
        let context = try Shared.context()
        let source = """
            __kernel void broken(__global float *x) {
                x[get_global_id(0)] = undeclared_thing * 2.0f;
            }
            """
        let error = #expect(throws: CLNetError.self) {
            try context.program(source: source, fileName: "Broken.cl", options: "-DMARKER=17")
        }
        guard case let .kernelBuild(file, options, log)? = error else {
            Issue.record("expected a kernel build error, got \(String(describing: error))")
            return
        }
        #expect(file == "Broken.cl")
        #expect(options.contains("-DMARKER=17"))
        #expect(log.contains("undeclared_thing"))
        #expect("\(error!)".contains("undeclared_thing"))
        #expect("\(error!)".contains("Broken.cl"))
    }

    @Test func unknownKernelNameIsNamed() throws {
        let context = try Shared.context()
        let error = #expect(throws: CLNetError.self) { try context.program(.util).kernel("no_such_kernel") }
        #expect("\(error!)".contains("CL_INVALID_KERNEL_NAME"))
        #expect("\(error!)".contains("no_such_kernel"))
    }

    @Test func badLaunchSizesThrow() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let kernel = try context.program(.util).kernel("fill_f32")
        let buffer = try context.buffer(floats: 4)
        let args: [KernelArgument] = [.buffer(buffer), .uint(0), .uint(4), .float(0)]
        #expect(throws: CLNetError.self) { try queue.enqueue(kernel, args, global: [0]) }
        #expect(throws: CLNetError.self) { try queue.enqueue(kernel, args, global: [4], local: [2, 2]) }
        #expect(throws: CLNetError.self) { try queue.enqueue(kernel, args, global: [1, 1, 1, 1]) }
    }
}
