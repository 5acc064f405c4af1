extension Reference {
    /// One step of SGD as torch.optim.SGD with dampening 0; returns the new parameters and momentum.
    public static func sgdStep(parameters: [Double], gradients: [Double], momentumBuffer: [Double], learningRate: Double,
                               momentum: Double, weightDecay: Double, nesterov: Bool) -> (parameters: [Double], momentum: [Double]) {
        var p = parameters, buf = momentumBuffer
        for i in p.indices {
            var g = gradients[i] + weightDecay * p[i]
            if momentum != 0 {
                buf[i] = momentum * buf[i] + g
                g = nesterov ? g + momentum * buf[i] : buf[i]
            }
            p[i] -= learningRate * g
        }
        return (p, buf)
    }
}
