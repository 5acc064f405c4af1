/// A device copy of the parameters (running statistics included) and the momentum as they were
/// at the start of a training step, so that a step that fails, or whose loss is not finite, can
/// be undone as a whole.
///
/// Two buffers rather than one, so that neither exceeds the device's largest allocation when
/// the arenas they copy fit.
final class StepBackup: @unchecked Sendable {
    // Used only from the executor that owns it, which is not run from two threads at once.
    private let parameters: Buffer
    private let momentum: Buffer?
    /// Whether the copy holds the start of the current step: a manual change of the parameters
    /// or momentum, or a restore, makes it stale.
    private(set) var isValid = false
    /// The executor's step count when the copy was taken.
    private(set) var step: Int64 = 0

    init(context: Context, parameterArena: Buffer, momentumArena: Buffer?) throws(CLNetError) {
        parameters = try context.buffer(bytes: parameterArena.byteCount)
        momentum = try momentumArena.map { m throws(CLNetError) in try context.buffer(bytes: m.byteCount) }
    }

    var byteCount: Int { parameters.byteCount + (momentum?.byteCount ?? 0) }

    /// Enqueues the copy of `parameterArena` and `momentumArena` on `queue`, as step `step` starts.
    func take(_ queue: CommandQueue, parameterArena: Buffer, momentumArena: Buffer?, step: Int64) throws(CLNetError) {
        try queue.copy(from: parameterArena, to: parameters, bytes: parameterArena.byteCount)
        if let momentumArena, let momentum { try queue.copy(from: momentumArena, to: momentum, bytes: momentumArena.byteCount) }
        isValid = true
        self.step = step
    }

    /// Copies the saved state back and waits for it; returns the step count it was taken at.
    /// The copy is stale afterwards.
    func restore(_ queue: CommandQueue, parameterArena: Buffer, momentumArena: Buffer?) throws(CLNetError) -> Int64 {
        try queue.copy(from: parameters, to: parameterArena, bytes: parameterArena.byteCount)
        if let momentumArena, let momentum { try queue.copy(from: momentum, to: momentumArena, bytes: momentumArena.byteCount) }
        try queue.finish()
        isValid = false
        return step
    }

    /// Marks the copy stale: the state it holds is no longer one the executor can go back to.
    func invalidate() { isValid = false }
}
