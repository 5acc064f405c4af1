// ResNet v1.5 (He et al. 2015, with the stride on the 3x3 convolution as torchvision), and its
// ResNeXt and Wide ResNet variants, built as graphs with torchvision's parameter names.

/// The residual networks of torchvision's `resnet.py`.
public struct ResNet: Sendable {
    /// The residual block: two 3x3 convolutions (ResNet-18/34), or 1x1, 3x3, 1x1 with 4x expansion.
    public enum Block: Sendable { case basic, bottleneck }
    /// The layers before the first stage: torchvision's 7x7 stride-2 convolution and max pooling
    /// (ImageNet), or one 3x3 convolution of 64 channels with its norm (CIFAR, as Xie et al.'s
    /// ResNeXt-29).
    public enum Stem: Sendable { case imagenet, cifar }

    public var block: Block
    public var layers: [Int]
    public var groups: Int = 1
    public var widthPerGroup: Int = 64
    public var classes: Int = 1000
    /// Input channels (3 for RGB).
    public var inChannels: Int = 3
    /// Batch norm (torchvision's) or group norm.
    public var norm: NormChoice = .batch
    public var stem: Stem = .imagenet
    /// Stochastic depth (Huang et al. 2016): the probability of dropping the last residual
    /// branch in training, decaying linearly to the first (0: off).
    public var stochasticDepth: Float = 0

    public init(block: Block, layers: [Int], groups: Int = 1, widthPerGroup: Int = 64, classes: Int = 1000,
                stem: Stem = .imagenet) {
        self.block = block
        self.layers = layers
        self.groups = groups
        self.widthPerGroup = widthPerGroup
        self.classes = classes
        self.stem = stem
    }

    public static let resnet18 = ResNet(block: .basic, layers: [2, 2, 2, 2])
    public static let resnet34 = ResNet(block: .basic, layers: [3, 4, 6, 3])
    public static let resnet50 = ResNet(block: .bottleneck, layers: [3, 4, 6, 3])
    public static let resnet101 = ResNet(block: .bottleneck, layers: [3, 4, 23, 3])
    public static let resnet152 = ResNet(block: .bottleneck, layers: [3, 8, 36, 3])
    public static let resnext50_32x4d = ResNet(block: .bottleneck, layers: [3, 4, 6, 3], groups: 32, widthPerGroup: 4)
    public static let resnext101_32x8d = ResNet(block: .bottleneck, layers: [3, 4, 23, 3], groups: 32, widthPerGroup: 8)
    public static let resnext101_64x4d = ResNet(block: .bottleneck, layers: [3, 4, 23, 3], groups: 64, widthPerGroup: 4)
    public static let wide_resnet50_2 = ResNet(block: .bottleneck, layers: [3, 4, 6, 3], widthPerGroup: 128)
    public static let wide_resnet101_2 = ResNet(block: .bottleneck, layers: [3, 4, 23, 3], widthPerGroup: 128)
    /// ResNeXt-29 for CIFAR (Xie et al. 2017, section 5.3): three stages of three bottlenecks
    /// with cardinality 8 or 16 and 64 channels per group in the first stage.
    public static let resnext29_8x64d = ResNet(block: .bottleneck, layers: [3, 3, 3], groups: 8, widthPerGroup: 64,
                                               classes: 10, stem: .cifar)
    public static let resnext29_16x64d = ResNet(block: .bottleneck, layers: [3, 3, 3], groups: 16, widthPerGroup: 64,
                                                classes: 10, stem: .cifar)

    /// The graph for `batch` images of `size` x `size` pixels, returning the logits; with
    /// `loss`, a softmax cross-entropy node follows them.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        var b = GraphBuilder()
        let size = size ?? (stem == .imagenet ? 224 : 32)
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y: Value
        if stem == .imagenet {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 7, stride: 2, padding: 3), name: "conv1")
            y = try b.norm(y, norm, relu: true, name: "bn1")
            y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "maxpool")
        } else {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 3, padding: 1), name: "conv1")
            y = try b.norm(y, norm, relu: true, name: "bn1")
        }
        let expansion = block == .basic ? 1 : 4
        var inplanes = 64
        let blocks = layers.reduce(0, +)
        var blockIndex = 0
        for (stage, count) in layers.enumerated() {
            let planes = 64 << stage
            for i in 0..<count {
                let stride = i == 0 && stage > 0 ? 2 : 1
                let name = "layer\(stage + 1).\(i)"
                var shortcut = y
                if stride != 1 || inplanes != planes * expansion {
                    shortcut = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes * expansion, kernel: 1,
                                                    stride: stride), name: "\(name).downsample.0")
                    shortcut = try b.norm(shortcut, norm, name: "\(name).downsample.1")
                }
                var z: Value
                if block == .basic {
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv1")
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn1")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2")
                    z = try b.norm(z, norm, name: "\(name).bn2")
                } else {
                    let width = planes * widthPerGroup / 64 * groups
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: width, kernel: 1), name: "\(name).conv1")
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn1")
                    z = try b.conv(z, Conv2D(inChannels: width, outChannels: width, kernel: 3, stride: stride, padding: 1,
                                             groups: groups), name: "\(name).conv2")
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn2")
                    z = try b.conv(z, Conv2D(inChannels: width, outChannels: planes * 4, kernel: 1), name: "\(name).conv3")
                    z = try b.norm(z, norm, name: "\(name).bn3")
                }
                blockIndex += 1
                if stochasticDepth > 0 {
                    z = try b.stochasticDepth(z, p: stochasticDepth * Float(blockIndex) / Float(blocks), name: "\(name).drop_path")
                }
                y = try b.add(z, shortcut, relu: true, name: "\(name).add")
                inplanes = planes * expansion
            }
        }
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }
}
