// The SGD update on the device. CPU reference: Reference/OptimizerReference.swift; kernel:
// Kernels/Optimizer.cl.

/// torch.optim.SGD (dampening 0): momentum, Nesterov, weight decay. One launch updates a
/// contiguous range of parameters, so an optimizer over a parameter arena is one launch per
/// group of settings (for example, with and without weight decay).
public struct SGD: Sendable, Equatable {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public var nesterov: Bool
    /// An L1 prior `prior * |p - priorTarget|`, applied by its proximal step after the update:
    /// each parameter moves toward `priorTarget` by `learningRate * prior` and stops there, so a
    /// parameter the loss does not hold away reaches the target exactly (0: no prior). The
    /// partially linear networks pull PReLU slopes to 1 this way (`Executor.linearityPrior`).
    public var prior: Float = 0
    public var priorTarget: Float = 0
    /// Where each parameter is clamped after the step (`Parameter.bounds`: DCLS's kernel
    /// positions, which must stay inside their footprint); nil: nowhere.
    public var bounds: ClosedRange<Float>? = nil

    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false,
                prior: Float = 0, priorTarget: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        self.prior = prior
        self.priorTarget = priorTarget
    }

    /// Updates `parameters` in place from `gradients`, keeping the momentum in `momentumBuffer`
    /// (zero before the first step). All three are dense float32 vectors of the same length.
    ///
    /// Mixed precision: the gradients are first multiplied by `gradientScale` (one over the loss
    /// scale); where one is not finite, the 32-bit word `overflow` is set to 1 (it is left as
    /// it is otherwise) and the caller discards the step. `weightCopy`, a 16-bit tensor of the
    /// same length, receives the new values too, in the same pass.
    @discardableResult
    public func step(_ q: CommandQueue, parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor,
                     gradientScale: Float = 1, overflow: Buffer? = nil, weightCopy: Tensor? = nil,
                     waitFor: [Event] = []) throws(CLNetError) -> Event {
        let n = parameters.shape.count
        guard gradients.shape.count == n, momentumBuffer.shape.count == n, parameters.isDense, gradients.isDense,
              momentumBuffer.isDense, weightCopy.map({ $0.shape.count == n && $0.isDense }) ?? true else {
            throw .invalidShape(operation: "SGD", message: """
                parameters \(parameters.shape), gradients \(gradients.shape), momentum \(momentumBuffer.shape)\
                \(weightCopy.map { " and weight copy \($0.shape)" } ?? "") must be dense and equally long
                """)
        }
        guard [parameters, gradients, momentumBuffer].allSatisfy({ $0.storage == .fp32 }),
              weightCopy.map({ $0.storage != .fp32 }) ?? true else {
            throw .invalidArgument("SGD: parameters, gradients and momentum are float32 and a weight copy 16-bit")
        }
        guard !nesterov || momentum > 0 else {
            throw .invalidShape(operation: "SGD", message: "Nesterov momentum needs a momentum above 0")
        }
        guard prior >= 0, prior.isFinite else {
            throw .invalidArgument("SGD's prior must be a finite number from 0, not \(prior)")
        }
        let tiles = CommandQueue.tiles(n)
        let flag: Buffer
        if let overflow { flag = overflow } else { flag = try q.discardedFlag() }
        var copy: [KernelArgument] = []
        if let weightCopy { copy = try weightCopy.vectorArguments }
        return try q.launchRuns(.optimizer, "sgd_update", parameters.vectorArguments + gradients.vectorArguments +
                                momentumBuffer.vectorArguments + [.count(n), .float(learningRate), .float(momentum),
                                .float(weightDecay), .flag(nesterov), .float(priorTarget), .float(learningRate * prior),
                                .float(bounds?.lowerBound ?? -.infinity), .float(bounds?.upperBound ?? .infinity),
                                .count(tiles), .float(gradientScale), .buffer(flag), .uint(0)] + copy,
                                specialised: weightCopy == nil ? [:] : ["WEIGHT_COPY": "1"], waitFor: waitFor)
    }
}
