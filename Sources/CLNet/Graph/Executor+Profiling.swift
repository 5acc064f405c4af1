/// Device times by node, from OpenCL's profiling events.
extension Executor {

    /// Records the device time of every command from now until `stopProfiling`, by node.
    public func startProfiling() {
        for q in queues { q.startRecording() }
    }

    /// Waits for the recorded commands and returns their device time by node (and phase).
    public func stopProfiling() throws(CLNetError) -> ExecutorProfile {
        var profile = ExecutorProfile(nodes: Array(repeating: .init(), count: graph.nodes.count))
        var first = UInt64.max, last = UInt64.min
        // Every queue stops recording before any event is queried, so that a failed query leaves none recording.
        let recorded = queues.map { $0.stopRecording() }
        for commands in recorded {
            for c in commands {
                let (start, end) = try c.event.startEndNanoseconds()
                first = min(first, start)
                last = max(last, end)
                let t = Double(end &- start) * 1e-9
                profile.commandSeconds += t
                profile.byCommand[c.command, default: 0] += t
                guard let scope = c.scope, scope < schedule.tasks.count else { profile.otherSeconds += t; continue }
                switch schedule.tasks[scope].kind {
                case let .forward(k):
                    profile.nodes[k].forwardSeconds += t
                    profile.nodes[k].commands += 1
                case let .backward(i, _):
                    profile.nodes[schedule.backwardSteps[i].node].backwardSeconds += t
                    profile.nodes[schedule.backwardSteps[i].node].commands += 1
                case let .update(k):
                    profile.nodes[k].updateSeconds += t
                    profile.nodes[k].commands += 1
                }
            }
        }
        profile.spanSeconds = first <= last ? Double(last - first) * 1e-9 : 0
        return profile
    }
}

/// One step's loss and correct count, copied to the host without blocking the device.
public final class LossReading: @unchecked Sendable {
    // The host memory is written by the driver until `event` completes; it is freed only after.
    private let event: Event
    private let storage: UnsafeMutablePointer<Float>

    init(queue: CommandQueue, result: Tensor) throws(CLNetError) {
        storage = UnsafeMutablePointer<Float>.allocate(capacity: 2)
        storage.initialize(repeating: .nan, count: 2)
        do {
            event = try queue.readAsync(result.buffer, offset: result.offset * 4, bytes: 8, into: UnsafeMutableRawPointer(storage))
        } catch {
            storage.deallocate()
            throw error
        }
    }

    deinit {
        try? event.wait()
        storage.deallocate()
    }

    /// Waits for this step's forward pass and returns its mean loss and correct top-1 count.
    public func value() throws(CLNetError) -> (loss: Float, correct: Int) {
        try event.wait()
        let correct = storage[1]
        return (storage[0], correct.isFinite ? Int(correct) : 0)
    }
}

/// Device time of the commands an executor enqueued while profiling (`Executor.startProfiling`),
/// from OpenCL's profiling events. Commands overlap when several queues run at once, so the sum
/// can exceed the span.
public struct ExecutorProfile: Sendable {
    /// One node's work: its forward pass, its backward pass (input and weight gradients), and
    /// the optimizer update of its parameters.
    public struct NodeTime: Sendable {
        public var forwardSeconds = 0.0
        public var backwardSeconds = 0.0
        public var updateSeconds = 0.0
        /// Commands recorded for the node (kernels, copies, the last kernel of each CLBlast call).
        public var commands = 0
        public var totalSeconds: Double { forwardSeconds + backwardSeconds + updateSeconds }

        public init() {}
    }

    public init(nodes: [NodeTime]) { self.nodes = nodes }

    /// Adds `other`'s times (of the same graph) to these; spans add too, as for consecutive steps.
    public mutating func add(_ other: ExecutorProfile) {
        for k in nodes.indices where k < other.nodes.count {
            nodes[k].forwardSeconds += other.nodes[k].forwardSeconds
            nodes[k].backwardSeconds += other.nodes[k].backwardSeconds
            nodes[k].updateSeconds += other.nodes[k].updateSeconds
            nodes[k].commands += other.nodes[k].commands
        }
        otherSeconds += other.otherSeconds
        commandSeconds += other.commandSeconds
        spanSeconds += other.spanSeconds
        for (name, t) in other.byCommand { byCommand[name, default: 0] += t }
    }

    /// Every time multiplied by `factor` (1 / steps: the mean per step).
    public func scaled(by factor: Double) -> ExecutorProfile {
        var p = self
        for k in p.nodes.indices {
            p.nodes[k].forwardSeconds *= factor
            p.nodes[k].backwardSeconds *= factor
            p.nodes[k].updateSeconds *= factor
        }
        p.otherSeconds *= factor
        p.commandSeconds *= factor
        p.spanSeconds *= factor
        p.byCommand = p.byCommand.mapValues { $0 * factor }
        return p
    }

    /// By node index of the graph.
    public var nodes: [NodeTime]
    /// Commands outside any node: input and label uploads, markers, the loss read-back.
    public var otherSeconds = 0.0
    /// Every command's device time, summed.
    public var commandSeconds = 0.0
    /// Device time by command name (kernel, copy, CLBlast routine).
    public var byCommand: [String: Double] = [:]
    /// From the first command's start to the last one's end, on the device clock.
    public var spanSeconds = 0.0
}
