extension Reference {
    /// One step of SGD as torch.optim.SGD with dampening 0, then the proximal step of an L1 prior
    /// `prior * |p - priorTarget|` (see `SGD.prior`), then the clamp into `bounds` (see
    /// `SGD.bounds`); returns the new parameters and momentum.
    public static func sgdStep(parameters: [Double], gradients: [Double], momentumBuffer: [Double], learningRate: Double,
                               momentum: Double, weightDecay: Double, nesterov: Bool, prior: Double = 0,
                               priorTarget: Double = 0, bounds: ClosedRange<Double>? = nil)
        -> (parameters: [Double], momentum: [Double]) {
        var p = parameters, buf = momentumBuffer
        for i in p.indices {
            var g = gradients[i] + weightDecay * p[i]
            if momentum != 0 {
                buf[i] = momentum * buf[i] + g
                g = nesterov ? g + momentum * buf[i] : buf[i]
            }
            p[i] -= learningRate * g
            if prior > 0 {
                let d = p[i] - priorTarget, left = abs(d) - learningRate * prior
                p[i] = left <= 0 ? priorTarget : priorTarget + (d < 0 ? -left : left)
            }
            if let bounds { p[i] = min(max(p[i], bounds.lowerBound), bounds.upperBound) }
        }
        return (p, buf)
    }
}
