// Partially linear networks (Mehmeti-Göpel and Disselhoff, "Nonlinear Advantage", ICML 2023):
// channel-wise PReLUs whose slopes an L1 prior pulls to 1 (`Executor.linearityPrior`) become
// linear channel by channel, and the network's effective depth is the average number of active
// nonlinearities along a path from input to output.

/// The effective depth of a network whose PReLU channels may have become linear.
public struct PathLength: Sendable, Equatable, Codable {
    /// The expected number of active nonlinear units along a path from the input to the output,
    /// normalised as the paper's figure 1: each addition (and any other node of several inputs)
    /// splits the paths evenly among its inputs, a concatenation by channels, and a path crosses
    /// one channel of each layer, chosen evenly. Paths follow the features, not attention: a
    /// channel scale (squeeze-and-excitation) passes its input's, a selective sum its branches'.
    /// ReLUs (fused into norms and additions too) count 1 each; a PReLU counts the fraction of
    /// its channels whose slope is not exactly 1. Max pooling and the attention gates' own
    /// nonlinearities are not counted: nothing linearises them.
    public var average: Double
    /// PReLU channels whose slope is exactly 1, out of all PReLU channels.
    public var linearChannels: Int
    public var preluChannels: Int

    public init(average: Double, linearChannels: Int, preluChannels: Int) {
        self.average = average
        self.linearChannels = linearChannels
        self.preluChannels = preluChannels
    }
}

extension Graph {
    /// The path length to `output` with the PReLU slopes in `slopes` (by parameter name).
    public func pathLength(to output: Value, slopes: [String: [Float]]) throws(CLNetError) -> PathLength {
        var depth = [Double](repeating: 0, count: shapes.count)
        var linear = 0, total = 0
        for node in nodes {
            let inputs = node.inputs.map { depth[$0.index] }
            var d = inputs.isEmpty ? 0 : inputs.reduce(0, +) / Double(inputs.count)
            switch node.operation {
            case .channelScale:
                d = inputs[0]
            case let .selectiveSum(branches):
                d = inputs.prefix(branches).reduce(0, +) / Double(branches)
            case .concat:
                let channels = node.inputs.map { Double(shape(of: $0)[1]) }
                d = zip(inputs, channels).map(*).reduce(0, +) / channels.reduce(0, +)
            // A dendritic layer's ReLUs are one nonlinearity on every path through it.
            case .relu, .add(relu: true), .batchNorm(relu: true, _, _), .groupNorm(_, relu: true, _), .dendritic:
                d += 1
            case .prelu:
                let a = try checkedParameter(node.parameters[0], in: slopes, for: "the path length")
                let nonlinear = a.filter { $0 != 1 }.count
                linear += a.count - nonlinear
                total += a.count
                d += Double(nonlinear) / Double(max(a.count, 1))
            default:
                break
            }
            depth[node.output.index] = d
        }
        return PathLength(average: depth[output.index], linearChannels: linear, preluChannels: total)
    }
}
