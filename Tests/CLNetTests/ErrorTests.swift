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

@Suite("Executor misuse fails with a message")
struct ExecutorMisuseTests {
    static func graph(_ input: Shape) throws -> Graph {
        var b = GraphBuilder()
        let x = try b.input("x", shape: input)
        var y = try b.conv(x, Conv2D(inChannels: input.c, outChannels: 4, kernel: 1), name: "conv")
        y = try b.batchNorm(y, relu: true, name: "bn")
        let p = try b.globalAvgPool(y, name: "pool")
        let logits = try b.linear(p, outFeatures: 3, name: "fc")
        let loss = try b.softmaxCrossEntropy(logits, name: "loss")
        // Nothing may read the loss: the backward pass starts there.
        let error = #expect(throws: CLNetError.self) { _ = try b.relu(loss, name: "after") }
        #expect("\(error.map { "\($0)" } ?? "")".contains("reads the loss loss"))
        return b.graph
    }

    @Test func backwardNeedsAFreshForward() throws {
        let executor = try Executor(graph: try Self.graph([2, 3, 4, 4]), context: try Shared.context(), training: true)
        let early = #expect(throws: CLNetError.self, "backward before any forward") { try executor.backward() }
        #expect(Self.isInvalidState(early), "\(String(describing: early))")
        try executor.forward(["x": [Float](repeating: 0.5, count: 96)], labels: [0, 2])
        try executor.backward()
        let error = #expect(throws: CLNetError.self, "a second backward") { try executor.backward() }
        #expect("\(error.map { "\($0)" } ?? "")".contains("call forward first"))
        #expect(Self.isInvalidState(error))
    }

    static func isInvalidState(_ e: CLNetError?) -> Bool {
        if case .invalidState = e { true } else { false }
    }

    /// Each kind of misuse has its own case, so that a caller can tell them apart.
    @Test func misuseHasItsOwnCase() throws {
        let graph = try Self.graph([2, 3, 4, 4])
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true)
        let unknown = #expect(throws: CLNetError.self) { try executor.setParameter("no.such.weight", [1]) }
        #expect(unknown == .unknownParameter(name: "no.such.weight", message: "is not a parameter of this graph"))
        #expect("\(unknown!)" == "parameter no.such.weight: is not a parameter of this graph")
        let x = [Float](repeating: 0.5, count: 96)
        for labels in [[0], [0, 3], [-1, 1]] {
            let bad = #expect(throws: CLNetError.self, "labels \(labels)") { try executor.forward(["x": x], labels: labels) }
            if case .invalidLabels = bad {} else { Issue.record("labels \(labels): \(String(describing: bad))") }
        }
        let noLoss = #expect(throws: CLNetError.self) {
            var b = GraphBuilder()
            let y = try b.relu(try b.input("x", shape: [2, 3]), name: "relu")
            _ = y
            _ = try Executor(graph: b.graph, context: try Shared.context(), training: true)
        }
        if case .invalidGraph = noLoss {} else { Issue.record("no loss: \(String(describing: noLoss))") }
        let inference = try Executor(graph: graph, context: try Shared.context(), training: false)
        let notKept = #expect(throws: CLNetError.self) { _ = try inference.read(graph.nodes[0].output) }
        #expect(Self.isInvalidState(notKept))
        #expect(Self.isInvalidState(#expect(throws: CLNetError.self) { try inference.backward() }))
        #expect(Self.isInvalidState(#expect(throws: CLNetError.self) { _ = try inference.loss() }))
    }

    @Test func batchNormNeedsMoreThanOneValuePerChannelInTraining() throws {
        let graph = try Self.graph([1, 3, 1, 1])
        let error = #expect(throws: CLNetError.self) { try Executor(graph: graph, context: try Shared.context(), training: true) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("batch norm bn"))
        _ = try Executor(graph: graph, context: try Shared.context(), training: false)
    }
}
