/// Dynamic loss scaling for fp16 training, as PyTorch's `torch.cuda.amp.GradScaler` with its
/// defaults: the loss gradient is multiplied by `scale` so that small activation gradients stay
/// within half's range; the update divides it out of the float32 weight gradients. A step whose
/// gradients are not finite is undone and the scale halves; after `growthInterval` clean steps
/// in a row it doubles.
///
/// bfloat16 has float32's exponent range and needs none: an executor scales only at fp16.
public struct LossScaler: Sendable, Equatable, Codable {
    public var scale: Float = 65536
    public var growthFactor: Float = 2
    public var backoffFactor: Float = 0.5
    public var growthInterval = 2000
    /// Clean steps since the scale last changed.
    public var cleanSteps = 0
    /// Steps undone for overflow, over this scaler's life.
    public var skippedSteps = 0

    public init() {}

    /// Accounts for one step: backs off after an overflow, grows after enough clean steps.
    mutating func record(overflow: Bool) {
        if overflow {
            scale *= backoffFactor
            cleanSteps = 0
            skippedSteps += 1
        } else {
            cleanSteps += 1
            // As GradScaler: a scale that would not be finite does not grow.
            if cleanSteps >= growthInterval {
                if (scale * growthFactor).isFinite { scale *= growthFactor }
                cleanSteps = 0
            }
        }
    }
}

/// Mixed precision's share of a step: the 16-bit weight copies and the loss scale.
extension Executor {
    /// Rewrites every 16-bit weight copy from its float32 master, after the host or a restore
    /// changed the masters (the optimizer's update refreshes them itself).
    func refreshWeightCopies(_ queue: CommandQueue) throws(CLNetError) {
        for (i, copy) in weightCopies { try queue.copy(from: parameterViews[i], to: copy) }
    }

    /// The weight node kernels read: the 16-bit copy where there is one.
    func storedParameter(_ i: Int) -> Tensor { weightCopies[i] ?? parameterViews[i] }

    /// Node `k`'s workspace as a tensor of the activations' storage, for kernels that read it
    /// beside activations (stochastic depth's per-sample scales): the same memory, which holds
    /// its elements in fewer bytes.
    func storedWorkspace(_ k: Int) throws(CLNetError) -> Tensor {
        try nodeWorkspaces[k]!.viewed(as: precision)
    }

    /// The loss gradient's factor for this step.
    var lossGradientScale: Float { lossScaler?.scale ?? 1 }

    /// Replaces the loss scaler's state, as when resuming from a checkpoint (fp16 training only).
    public func setLossScaler(_ scaler: LossScaler) throws(CLNetError) {
        guard lossScaler != nil else {
            throw .invalidState("setLossScaler: this executor does not scale its loss (only fp16 training with an optimizer does)")
        }
        guard scaler.scale.isFinite, scaler.scale > 0, scaler.growthInterval > 0 else {
            throw .invalidArgument("setLossScaler: the scale must be a positive number and the growth interval at least 1, not \(scaler.scale) and \(scaler.growthInterval)")
        }
        lossScaler = scaler
    }

    /// After a scaled step's backward: waits for the updates, and where one met a gradient
    /// that is not finite, undoes the step from the backup taken at its start and backs the
    /// scale off. GradScaler synchronises at the same point to read its flag.
    func finishScaledStep() throws(CLNetError) {
        guard var scaler = lossScaler, let overflowFlag, optimizer != nil else { return }
        try synchronize()
        let overflow = try queue.read(overflowFlag, as: UInt32.self, count: 1)[0] != 0
        if overflow {
            // The backup is stale when the parameters were set between forward and backward:
            // the update has written what the overflow made of them.
            guard let backup, backup.isValid else {
                parametersLost = true
                throw .invalidState("""
                    a step's scaled gradients overflowed and the parameters, set since its forward pass, \
                    cannot be restored; load them again
                    """)
            }
            // The step counts, as the trainer's does, so that a resumed run agrees.
            let step = try backup.restore(queue, parameterArena: parameterArena, momentumArena: momentumArena)
            stepsTaken = step + 1
            try refreshWeightCopies(queue)
            try queue.finish()
        }
        scaler.record(overflow: overflow)
        lossScaler = scaler
        lastStepOverflowed = overflow
    }
}
