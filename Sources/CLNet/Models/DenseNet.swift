// DenseNet (Huang et al. 2017) as torchvision's `densenet.py`, built as a graph with its
// parameter names.

/// The densely connected networks of torchvision.
public struct DenseNet: Sendable {
    public var growth: Int
    public var blocks: [Int]
    public var initialFeatures: Int
    public var bottleneckSize: Int = 4
    public var classes: Int = 1000
    /// Input channels (3 for RGB).
    public var inChannels: Int = 3
    /// Batch norm (torchvision's) or group norm.
    public var norm: NormChoice = .batch

    public init(growth: Int, blocks: [Int], initialFeatures: Int, bottleneckSize: Int = 4, classes: Int = 1000) {
        self.growth = growth
        self.blocks = blocks
        self.initialFeatures = initialFeatures
        self.bottleneckSize = bottleneckSize
        self.classes = classes
    }

    public static let densenet121 = DenseNet(growth: 32, blocks: [6, 12, 24, 16], initialFeatures: 64)
    public static let densenet161 = DenseNet(growth: 48, blocks: [6, 12, 36, 24], initialFeatures: 96)
    public static let densenet169 = DenseNet(growth: 32, blocks: [6, 12, 32, 32], initialFeatures: 64)
    public static let densenet201 = DenseNet(growth: 32, blocks: [6, 12, 48, 32], initialFeatures: 64)

    /// The graph for `batch` images of `size` x `size` pixels. Each dense layer's input is the
    /// concatenation of the block's features so far, built as one concat node per layer; writing
    /// each layer straight into its slice of a block buffer (no copy) is the planner's next step.
    public func graph(batch: Int, size: Int = 224, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: initialFeatures, kernel: 7, stride: 2, padding: 3),
                           name: "features.conv0")
        y = try b.norm(y, norm, relu: true, name: "features.norm0")
        y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "features.pool0")
        var channels = initialFeatures
        for (i, count) in blocks.enumerated() {
            let block = "features.denseblock\(i + 1)"
            for l in 0..<count {
                let name = "\(block).denselayer\(l + 1)"
                var z = try b.norm(y, norm, relu: true, name: "\(name).norm1")
                z = try b.conv(z, Conv2D(inChannels: channels, outChannels: bottleneckSize * growth, kernel: 1),
                               name: "\(name).conv1")
                z = try b.norm(z, norm, relu: true, name: "\(name).norm2")
                z = try b.conv(z, Conv2D(inChannels: bottleneckSize * growth, outChannels: growth, kernel: 3, padding: 1),
                               name: "\(name).conv2")
                y = try b.concat([y, z], name: "\(name).concat")
                channels += growth
            }
            if i < blocks.count - 1 {
                let name = "features.transition\(i + 1)"
                var t = try b.norm(y, norm, relu: true, name: "\(name).norm")
                t = try b.conv(t, Conv2D(inChannels: channels, outChannels: channels / 2, kernel: 1), name: "\(name).conv")
                y = try b.avgPool(t, Pool2D(kernel: 2), name: "\(name).pool")
                channels /= 2
            }
        }
        y = try b.norm(y, norm, relu: true, name: "features.norm5")
        let pooled = try b.globalAvgPool(y, name: "features.avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "classifier")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }
}
