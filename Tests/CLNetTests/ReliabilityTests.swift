import CLNet
import Foundation
import Synchronization
import Testing

/// Failure paths: injected OpenCL faults in every phase of a training step leave the weights as
/// they were and the executor usable; a graph too large for the device is refused before
/// anything is allocated; a diverging run stops or skips; executors share a device across
/// threads. Each test that injects faults uses its own context, so that its call counts are its
/// own while other tests run.
@Suite("Reliability: faults, memory, divergence, concurrency")
struct ReliabilityTests {
    static let spec = "cifar_resnet:depth=8,channels=1,classes=4"

    static func executor(_ context: Context, queues: Int = 2) throws -> Executor {
        let graph = try ModelSpec.graph(spec, batch: 2, size: 8).graph
        let e = try Executor(graph: graph, context: context, training: true, queues: queues,
                             optimizer: SGD(learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4))
        try e.initialize(seed: 7)
        return e
    }

    static func batch(_ k: Int) -> (input: [Float], labels: [Int]) {
        var rng = SeededGenerator(seed: UInt64(100 + k))
        return ((0..<128).map { _ in Float(rng.uniform() * 2 - 1) }, [k % 4, (k + 1) % 4])
    }

    static func step(_ e: Executor, _ k: Int) throws {
        let b = batch(k)
        try e.forward(["input": b.input], labels: b.labels)
        try e.backward()
        try e.synchronize()
    }

    /// Every parameter, running statistic and momentum, in graph order.
    static func state(_ e: Executor) throws -> [Float] {
        var all: [Float] = []
        for p in e.graph.parameters {
            all += try e.parameter(p.name)
            if p.trainable { all += try e.momentum(p.name) }
        }
        return all
    }

    @Test func faultSpecificationsParse() throws {
        let f = try FaultInjection(spec: "enqueue:3,alloc:1")
        #expect(f.count(.enqueue) == 0)
        for bad in ["enqueue", "enqueue:0", "launch:3", "alloc:x", "read:-1"] {
            let e = #expect(throws: CLNetError.self) { try FaultInjection(spec: bad) }
            #expect("\(e!)".contains("CLNET_FAULT") && "\(e!)".contains(bad), "\(bad): \(e!)")
        }
    }

    /// A failed allocation anywhere in an executor's construction throws, names the call, and
    /// releases every buffer allocated before it.
    @Test func allocationFaultsReleaseEverything() throws {
        let context = try Context(device: try Shared.context().device)
        let graph = try ModelSpec.graph(Self.spec, batch: 2, size: 8).graph
        // The first construction may time the convolutions' algorithms (allocating their test
        // tensors); the process keeps the choices, so the constructions counted below do not.
        _ = try Executor(graph: graph, context: context, training: true, optimizer: SGD(learningRate: 0.1, momentum: 0.9))
        let before = context.faults.count(.alloc)
        _ = try Executor(graph: graph, context: context, training: true, optimizer: SGD(learningRate: 0.1, momentum: 0.9))
        let allocations = context.faults.count(.alloc) - before
        print("executor construction allocates \(allocations) buffers")
        #expect(allocations > 10)
        let baseline = context.live.snapshot["buffers"]!
        for n in 1...allocations {
            context.faults.arm(.alloc, at: n)
            let e = #expect(throws: CLNetError.self) {
                try Executor(graph: graph, context: context, training: true, optimizer: SGD(learningRate: 0.1, momentum: 0.9))
            }
            let message = e.map { "\($0)" } ?? "no error"
            #expect(message.contains("clCreateBuffer") && message.contains("injected"), "allocation \(n): \(message)")
            #expect(context.live.snapshot["buffers"]! == baseline, "allocation \(n) leaked buffers")
        }
        context.faults.disarm()
    }

    enum Phase: String, CaseIterable { case forward, backward }

    /// An enqueue or read failure at the start, middle and end of the forward pass and of the
    /// backward pass (whose last calls are optimizer updates) leaves every parameter, running
    /// statistic and momentum bit for bit as before the step, leaks no buffer, and the next step
    /// gives what an executor that never failed gives.
    @Test(arguments: [
        (FaultInjection.Kind.enqueue, Phase.forward, 0.0), (.enqueue, .forward, 0.5), (.enqueue, .forward, 1.0),
        (.enqueue, .backward, 0.0), (.enqueue, .backward, 0.5), (.enqueue, .backward, 1.0), (.read, .forward, 0.0),
    ])
    func stepFaultsLeaveTheWeightsAndRecover(kind: FaultInjection.Kind, phase: Phase, at fraction: Double) throws {
        let context = try Context(device: try Shared.context().device)
        let e = try Self.executor(context), reference = try Self.executor(try Shared.context())
        try Self.step(e, 0)
        try Self.step(reference, 0)
        // How many calls of this kind each phase makes, from a step that is then matched.
        let c0 = context.faults.count(kind)
        let b = Self.batch(1)
        try e.forward(["input": b.input], labels: b.labels)
        let c1 = context.faults.count(kind)
        try e.backward()
        let c2 = context.faults.count(kind)
        try e.synchronize()
        try Self.step(reference, 1)
        let (first, count) = phase == .forward ? (0, c1 - c0) : (c1 - c0, c2 - c1)
        try #require(count > 0, "\(phase) makes no \(kind) call")
        let n = first + 1 + min(count - 1, Int(fraction * Double(count - 1)))
        let before = try Self.state(e)
        let buffers = context.live.snapshot["buffers"]!
        context.faults.arm(kind, at: n)
        let error = #expect(throws: CLNetError.self) { try Self.step(e, 2) }
        #expect("\(error!)".contains("injected"), "\(error!)")
        context.faults.disarm()
        #expect(try Self.state(e) == before, "\(kind) call \(n) of the step changed the state")
        #expect(context.live.snapshot["buffers"]! == buffers)
        try Self.step(e, 2)
        try Self.step(reference, 2)
        #expect(relativeError(try Self.state(e), try Self.state(reference)) <= 1e-6)
    }

    /// Runs step `k` with a fault armed by `arm`, expects it to fail naming `call`, then checks
    /// that the state is as before and that step `k` then matches an executor that never failed.
    static func failThenRecover(warmSteps: Int, call: String, arm: (FaultInjection) -> Void) throws {
        let context = try Context(device: try Shared.context().device)
        let e = try executor(context), reference = try executor(try Shared.context())
        for k in 0..<warmSteps {
            try step(e, k)
            try step(reference, k)
        }
        let before = try state(e)
        arm(context.faults)
        let error = #expect(throws: CLNetError.self) { try step(e, warmSteps) }
        #expect("\(error!)".contains(call) && "\(error!)".contains("injected"), "\(error!)")
        context.faults.disarm()
        #expect(try state(e) == before)
        try step(e, warmSteps)
        try step(reference, warmSteps)
        #expect(relativeError(try state(e), try state(reference)) <= 1e-6)
    }

    /// A failure in the middle of the optimizer's updates (some parameters updated, others not)
    /// is undone too.
    @Test(arguments: [1, 5])
    func updateFaultIsUndone(at n: Int) throws {
        try Self.failThenRecover(warmSteps: 1, call: "sgd_update") { $0.arm(.enqueue, at: n, matching: "sgd_update") }
    }

    /// A kernel file that fails to build (here, the first one the step needs) fails the step
    /// cleanly; the next step builds it.
    @Test func buildFaultFailsTheStepCleanly() throws {
        try Self.failThenRecover(warmSteps: 0, call: "clBuildProgram") { $0.arm(.build, at: 1) }
    }

    /// A model and batch that cannot fit are refused before any buffer is allocated, with what
    /// the plan needs and what the device has.
    @Test func tooLargeForTheDeviceIsRefusedUpFront() throws {
        // A context of its own: tests running beside it allocate on the shared one.
        let context = try Context(device: Shared.context().device)
        let graph = try ModelSpec.graph("resnet50", batch: 4096, size: 224).graph
        let buffers = context.live.snapshot["buffers"]!
        let e = #expect(throws: CLNetError.self) { try Executor(graph: graph, context: context, training: true) }
        guard case let .outOfDeviceMemory(needed, available, device, _) = e else {
            Issue.record("not outOfDeviceMemory: \(String(describing: e))")
            return
        }
        #expect(needed > available && device == context.device.info.name)
        let text = "\(e!)"
        #expect(text.contains("needs") && text.contains("MiB") && text.contains("has") && text.contains(context.device.info.name), "\(text)")
        #expect(context.live.snapshot["buffers"]! == buffers)
    }

    /// Inputs must be finite; the executor says which value is not, and nothing changes.
    @Test func nonFiniteInputsAreRefused() throws {
        let e = try Self.executor(try Shared.context())
        let before = try Self.state(e)
        for bad in [Float.nan, .infinity, -.infinity] {
            var x = Self.batch(0).input
            x[37] = bad
            let error = #expect(throws: CLNetError.self) { try e.forward(["input": x], labels: [0, 1]) }
            #expect("\(error!)".contains("value 37") && "\(error!)".contains("finite"), "\(error!)")
        }
        #expect(try Self.state(e) == before)
        try Self.step(e, 0)
    }

    /// `undoLastStep` puts back exactly the state before the last step.
    @Test func undoLastStepRestoresTheState() throws {
        let e = try Self.executor(try Shared.context())
        try Self.step(e, 0)
        let before = try Self.state(e)
        try Self.step(e, 1)
        #expect(try Self.state(e) != before)
        try e.undoLastStep()
        #expect(try Self.state(e) == before)
        #expect(throws: CLNetError.self) { try e.undoLastStep() }
    }

    /// A run whose loss becomes NaN stops with a message; the checkpoint written before stays
    /// byte for byte, and a checkpoint of the diverged weights is refused. With the skip policy
    /// the steps are dropped and the run gives up after `Trainer.maximumSkips` in a row.
    @Test func divergenceStopsOrSkipsAndKeepsTheCheckpoint() throws {
        let train = try TrainerTests.data(64, seed: 21)
        var config = TrainingConfiguration(model: "cifar_resnet:depth=8")
        config.batchSize = 16
        config.learningRate = 1e30
        config.schedule = "constant"
        let dir = try temporaryDirectory("divergence")
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoint = dir.appendingPathComponent("checkpoint.safetensors")
        let trainer = try Trainer(configuration: config, train: train, test: nil, context: try Shared.context())
        try trainer.saveCheckpoint(to: checkpoint)
        let saved = try Data(contentsOf: checkpoint)
        let error = #expect(throws: CLNetError.self) { try trainer.trainEpoch() }
        #expect("\(error!)".contains("diverged") && "\(error!)".contains("intact"), "\(error!)")
        guard case let .diverged(step, loss, _) = error else {
            Issue.record("not diverged: \(String(describing: error))")
            return
        }
        #expect(step >= 1 && !loss.isFinite)
        let refused = #expect(throws: CLNetError.self) { try trainer.saveCheckpoint(to: checkpoint) }
        #expect("\(refused!)".contains("not finite"), "\(refused!)")
        #expect(try Data(contentsOf: checkpoint) == saved)

        let skipping = try Trainer(configuration: config, train: try TrainerTests.data(160, seed: 22), test: nil,
                                   context: try Shared.context())
        skipping.divergencePolicy = .skip
        let gaveUp = #expect(throws: CLNetError.self) { try skipping.trainEpoch() }
        #expect("\(gaveUp!)".contains("in a row"), "\(gaveUp!)")
        if case .diverged = gaveUp {} else { Issue.record("not diverged: \(String(describing: gaveUp))") }
        #expect(skipping.skippedSteps == Trainer.maximumSkips + 1)
        #expect(skipping.learningRateScale == pow(0.5, Double(Trainer.maximumSkips + 1)))
    }

    /// Thousands of training steps of a small model with device buffers, events and host memory
    /// flat. Minutes long, so outside the default suite: `CLNET_SOAK=1 swift test --filter soak`
    /// (`CLNET_SOAK=N` for N steps; 2,000 by default).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CLNET_SOAK"] != nil, "set CLNET_SOAK=1 to run the soak test"))
    func soak() throws {
        let steps = max(2_000, Int(ProcessInfo.processInfo.environment["CLNET_SOAK"] ?? "") ?? 0)
        let context = try Context(device: try Shared.context().device)
        let e = try Self.executor(context)
        var samples: [(step: Int, buffers: Int, events: Int, resident: Int)] = []
        let start = ContinuousClock.now
        for k in 0..<steps {
            let b = Self.batch(k % 50)
            let reading = try e.forward(["input": b.input], labels: b.labels)
            try e.backward()
            if k % 100 == 0 || k == steps - 1 {
                _ = try reading?.value()
                try e.synchronize()
                let live = context.live.snapshot
                samples.append((k, live["buffers"]!, live["events"]!, residentBytes()))
            }
        }
        try e.synchronize()
        let seconds = Double((ContinuousClock.now - start).components.seconds)
        for s in samples { print("soak: step \(s.step): \(s.buffers) buffers, \(s.events) events, \(s.resident >> 20) MiB resident") }
        print("soak: \(steps) steps in \(seconds) s")
        // After the first samples (programs, caches, allocator warm-up) nothing may grow.
        let settled = samples.dropFirst(2)
        #expect(Set(settled.map(\.buffers)).count == 1, "device buffers changed")
        #expect(settled.map(\.events).max()! <= settled.first!.events + 8, "events grew")
        let growth = settled.last!.resident - settled.first!.resident
        #expect(growth < 8 << 20, "resident memory grew by \(growth >> 20) MiB")
    }

    /// Two executors on one device (one context), stepping from two threads at once, give what
    /// each gives alone.
    @Test func twoExecutorsOnTwoThreads() throws {
        let context = try Shared.context()
        let alone = try Self.executor(context)
        for k in 0..<3 { try Self.step(alone, k) }
        let want = try Self.state(alone)
        let executors = [try Self.executor(context), try Self.executor(context)]
        let results = Mutex<[Int: Result<[Float], any Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let r = Result { () throws -> [Float] in
                for k in 0..<3 { try Self.step(executors[i], k) }
                return try Self.state(executors[i])
            }
            results.withLock { $0[i] = r }
        }
        for i in 0..<2 {
            let got = try results.withLock { $0[i]! }.get()
            #expect(relativeError(got, want) <= 1e-6, "thread \(i)")
        }
    }
}
