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

    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
    }

    /// Updates `parameters` in place from `gradients`, keeping the momentum in `momentumBuffer`
    /// (zero before the first step). All three are dense vectors of the same length.
    @discardableResult
    public func step(_ q: CommandQueue, parameters: Tensor, gradients: Tensor, momentumBuffer: Tensor,
                     waitFor: [Event] = []) throws(CLNetError) -> Event {
        let n = parameters.shape.count
        guard gradients.shape.count == n, momentumBuffer.shape.count == n, parameters.isDense, gradients.isDense,
              momentumBuffer.isDense else {
            throw .invalidShape(operation: "SGD", message: """
                parameters \(parameters.shape), gradients \(gradients.shape) and momentum \(momentumBuffer.shape) \
                must be dense and equally long
                """)
        }
        guard !nesterov || momentum > 0 else {
            throw .invalidShape(operation: "SGD", message: "Nesterov momentum needs a momentum above 0")
        }
        let tiles = CommandQueue.tiles(n)
        return try q.launchRuns(.optimizer, "sgd_update", parameters.vectorArguments + gradients.vectorArguments +
                                momentumBuffer.vectorArguments + [.count(n), .float(learningRate), .float(momentum),
                                .float(weightDecay), .flag(nesterov), .count(tiles)], waitFor: waitFor)
    }
}
