// DenseNet (Huang et al. 2017) as torchvision's `densenet.py`, built as a graph with its
// parameter names.

/// The densely connected networks of torchvision.
public struct DenseNet: Sendable {
    public var growth: Int
    public var blocks: [Int]
    public var initialFeatures: Int
    /// Each layer's 1x1 bottleneck has `bottleneckSize x growth` channels; 0 for none (DenseNet
    /// without -B: one BN-ReLU-3x3 convolution per layer).
    public var bottleneckSize: Int = 4
    /// Transitions keep this fraction of the channels (0.5 for DenseNet-BC, 1 for plain DenseNet).
    public var compression: Double = 0.5
    /// torchvision's 7x7 stride-2 convolution, norm and max pooling (ImageNet), or one 3x3
    /// convolution (CIFAR, as the paper).
    public var stem: ResNet.Stem = .imagenet
    public var classes: Int = 1000
    /// Input channels (3 for RGB).
    public var inChannels: Int = 3
    /// Batch norm (torchvision's) or group norm.
    public var norm: NormChoice = .batch

    public init(growth: Int, blocks: [Int], initialFeatures: Int, bottleneckSize: Int = 4, compression: Double = 0.5,
                stem: ResNet.Stem = .imagenet, classes: Int = 1000) {
        self.growth = growth
        self.blocks = blocks
        self.initialFeatures = initialFeatures
        self.bottleneckSize = bottleneckSize
        self.compression = compression
        self.stem = stem
        self.classes = classes
    }

    public static let densenet121 = DenseNet(growth: 32, blocks: [6, 12, 24, 16], initialFeatures: 64)
    public static let densenet161 = DenseNet(growth: 48, blocks: [6, 12, 36, 24], initialFeatures: 96)
    public static let densenet169 = DenseNet(growth: 32, blocks: [6, 12, 32, 32], initialFeatures: 64)
    public static let densenet201 = DenseNet(growth: 32, blocks: [6, 12, 48, 32], initialFeatures: 64)
    /// DenseNet-BC (L = 100, k = 12) for CIFAR: 0.8 M parameters.
    public static let densenet_bc_100_12 = DenseNet(growth: 12, blocks: [16, 16, 16], initialFeatures: 24, stem: .cifar,
                                                    classes: 10)
    /// DenseNet (L = 40, k = 12) for CIFAR, without bottlenecks or compression: 1.0 M parameters.
    public static let densenet40_12 = DenseNet(growth: 12, blocks: [12, 12, 12], initialFeatures: 16, bottleneckSize: 0,
                                               compression: 1, stem: .cifar, classes: 10)

    /// The graph for `batch` images of `size` x `size` pixels. Each dense layer's input is the
    /// concatenation of the block's features so far, one concat node per layer; the memory plan
    /// places them all in one buffer per block, so no concatenation copies.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        guard compression > 0, compression <= 1 else {
            throw .invalidArgument("DenseNet compression must be in (0, 1], not \(compression)")
        }
        var b = GraphBuilder()
        let size = size ?? (stem == .imagenet ? 224 : 32)
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var (y, _) = try features(&b, x)
        y = try b.norm(y, norm, relu: true, name: "features.norm5")
        let pooled = try b.globalAvgPool(y, name: "features.avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "classifier")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }

    /// The feature extractor up to the last dense block (before `features.norm5`), and its
    /// channels. With `dilated`, the third and fourth blocks keep the second's resolution: their
    /// transitions do not pool and their 3x3 convolutions dilate by 2 and 4 (DenseASPP's
    /// backbone, output stride 8).
    func features(_ b: inout GraphBuilder, _ x: Value, dilated: Bool = false) throws(CLNetError) -> (Value, Int) {
        var y: Value
        if stem == .imagenet {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: initialFeatures, kernel: 7, stride: 2, padding: 3),
                           name: "features.conv0")
            y = try b.norm(y, norm, relu: true, name: "features.norm0")
            y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "features.pool0")
        } else {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: initialFeatures, kernel: 3, padding: 1),
                           name: "features.conv0")
        }
        var channels = initialFeatures
        for (i, count) in blocks.enumerated() {
            let block = "features.denseblock\(i + 1)"
            let dilation = dilated && i >= 2 ? 1 << (i - 1) : 1
            for l in 0..<count {
                let name = "\(block).denselayer\(l + 1)"
                var z = try b.norm(y, norm, relu: true, name: "\(name).norm1")
                let last = Conv2D(inChannels: bottleneckSize > 0 ? bottleneckSize * growth : channels, outChannels: growth, kernel: 3,
                                  padding: dilation, dilation: dilation)
                if bottleneckSize > 0 {
                    z = try b.conv(z, Conv2D(inChannels: channels, outChannels: bottleneckSize * growth, kernel: 1),
                                   name: "\(name).conv1")
                    z = try b.norm(z, norm, relu: true, name: "\(name).norm2")
                    z = try b.conv(z, last, name: "\(name).conv2")
                } else {
                    z = try b.conv(z, last, name: "\(name).conv1")
                }
                y = try b.concat([y, z], name: "\(name).concat")
                channels += growth
            }
            if i < blocks.count - 1 {
                let name = "features.transition\(i + 1)"
                var t = try b.norm(y, norm, relu: true, name: "\(name).norm")
                // torchvision and the paper round the kept channels down.
                let kept = max(1, Int(Double(channels) * compression))
                t = try b.conv(t, Conv2D(inChannels: channels, outChannels: kept, kernel: 1), name: "\(name).conv")
                y = dilated && i >= 1 ? t : try b.avgPool(t, Pool2D(kernel: 2), name: "\(name).pool")
                channels = kept
            }
        }
        return (y, channels)
    }
}
