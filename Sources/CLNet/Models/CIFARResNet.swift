// The CIFAR-10 ResNets of He et al. 2015, section 4.2: a 3x3 convolution of 16 channels, three
// stages of n basic blocks at 16, 32 and 64 channels (the first block of the second and third
// stages halving the size), option-A shortcuts (subsample and zero-pad, no parameters), global
// pooling and a fully connected layer: 6n + 2 layers.

/// ResNet-20/32/44/56/110/1202 for 32x32 images (any channel count, e.g. 1 for Fashion-MNIST).
public struct CIFARResNet: Sendable {
    /// Blocks per stage: depth = 6n + 2.
    public var n: Int
    public var inChannels: Int = 3
    public var classes: Int = 10
    /// Batch norm (the paper's) or group norm.
    public var norm: NormChoice = .batch
    /// Stochastic depth (Huang et al. 2016): the probability of dropping the last residual
    /// branch in training, decaying linearly to the first (0: off).
    public var stochasticDepth: Float = 0

    public init(n: Int, inChannels: Int = 3, classes: Int = 10) {
        self.n = n
        self.inChannels = inChannels
        self.classes = classes
    }

    /// The model of `depth` layers (20, 32, 44, 56, 110, 1202, or any 6n + 2).
    public init(depth: Int, inChannels: Int = 3, classes: Int = 10) throws(CLNetError) {
        guard depth >= 8, (depth - 2) % 6 == 0 else {
            throw .invalidArgument("a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110, 1202); \(depth) is not one")
        }
        self.init(n: (depth - 2) / 6, inChannels: inChannels, classes: classes)
    }

    /// The graph for `batch` images of `size` x `size` (32 for CIFAR, 28 for MNIST-style data).
    public func graph(batch: Int, size: Int = 32, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 16, kernel: 3, padding: 1), name: "conv1")
        y = try b.norm(y, norm, relu: true, name: "bn1")
        var channels = 16
        for stage in 0..<3 {
            let planes = 16 << stage
            for i in 0..<n {
                let stride = i == 0 && stage > 0 ? 2 : 1
                let name = "layer\(stage + 1).\(i)"
                var z = try b.conv(y, Conv2D(inChannels: channels, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv1")
                z = try b.norm(z, norm, relu: true, name: "\(name).bn1")
                z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2")
                z = try b.norm(z, norm, name: "\(name).bn2")
                if stochasticDepth > 0 {
                    let drop = stochasticDepth * Float(stage * n + i + 1) / Float(3 * n)
                    z = try b.stochasticDepth(z, p: drop, name: "\(name).drop_path")
                }
                let shortcut = stride != 1 || channels != planes
                    ? try b.padShortcut(y, outChannels: planes, stride: stride, name: "\(name).shortcut") : y
                y = try b.add(z, shortcut, relu: true, name: "\(name).add")
                channels = planes
            }
        }
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }
}
