// Pre-activation ResNets (He et al. 2016, "Identity Mappings in Deep Residual Networks") and the
// Wide ResNets built on them (Zagoruyko & Komodakis 2016). Each block is BN-ReLU-conv twice (or
// three times, bottleneck) with nothing after the addition, so the identity path runs clean from
// the input to the last block; one BN-ReLU closes the network before pooling.
//
// The structure is that of the paper's own code, fb.resnet.torch `models/preresnet.lua`, which
// trained its ImageNet ResNet-200. The ImageNet stem ends in BN-ReLU and max pooling, so the first
// block of the first stage adds no pre-activation of its own ('no_preact'): the stem's output feeds
// both its branch and its shortcut. The first block of every later stage pre-activates once, and
// that output feeds the branch and the projection shortcut ('both_preact'). Other blocks
// pre-activate the branch only, so the identity carries the un-normalised sum. The CIFAR stem is a
// bare convolution, and its first block pre-activates like the later stages'.
//
// There is no torchvision class for these, so the names follow torchvision's ResNet wherever an
// equivalent exists: `conv1`, `bn1`, `layerS.I.bn1/conv1/bn2/conv2[/bn3/conv3]`, and
// `layerS.I.downsample.0` for a projection shortcut, which is a bare 1x1 convolution as in the
// paper. The ImageNet models have no `layer1.0.bn1`. The closing norm is `bn_final`, then `fc`.

/// Pre-activation ResNets and Wide ResNets, for ImageNet (224x224) or CIFAR (32x32).
public struct PreActResNet: Sendable {
    /// Two 3x3 convolutions, or 1x1, 3x3, 1x1 with 4x expansion.
    public var block: ResNet.Block
    /// Blocks per stage; the first block of every stage but the first halves the size.
    public var layers: [Int]
    /// The stem: a 7x7 stride-2 convolution, BN-ReLU and max pooling (ImageNet), whose output the
    /// first block takes as it is, or one 3x3 convolution (CIFAR), which the first block
    /// pre-activates.
    public var stem: ResNet.Stem
    /// Output channels of the stem, and the planes of the first stage (64 for ImageNet, 16 for CIFAR).
    public var baseWidth: Int
    /// Width multiplier of every stage (Wide ResNet's k).
    public var widen: Int = 1
    /// Dropout probability between the convolutions of each block (Wide ResNet), 0 for none.
    public var dropout: Float = 0
    public var classes: Int
    /// Input channels (3 for RGB).
    public var inChannels: Int = 3
    /// Batch norm (the papers') or group norm.
    public var norm: NormChoice = .batch
    /// Stochastic depth (Huang et al. 2016): the probability of dropping the last residual
    /// branch in training, decaying linearly to the first (0: off).
    public var stochasticDepth: Float = 0

    public init(block: ResNet.Block, layers: [Int], stem: ResNet.Stem, baseWidth: Int? = nil, widen: Int = 1,
                dropout: Float = 0, classes: Int? = nil) {
        self.block = block
        self.layers = layers
        self.stem = stem
        self.baseWidth = baseWidth ?? (stem == .imagenet ? 64 : 16)
        self.widen = widen
        self.dropout = dropout
        self.classes = classes ?? (stem == .imagenet ? 1000 : 10)
    }

    public static let preact_resnet18 = PreActResNet(block: .basic, layers: [2, 2, 2, 2], stem: .imagenet)
    public static let preact_resnet34 = PreActResNet(block: .basic, layers: [3, 4, 6, 3], stem: .imagenet)
    public static let preact_resnet50 = PreActResNet(block: .bottleneck, layers: [3, 4, 6, 3], stem: .imagenet)
    public static let preact_resnet101 = PreActResNet(block: .bottleneck, layers: [3, 4, 23, 3], stem: .imagenet)
    public static let preact_resnet152 = PreActResNet(block: .bottleneck, layers: [3, 8, 36, 3], stem: .imagenet)
    public static let preact_resnet200 = PreActResNet(block: .bottleneck, layers: [3, 24, 36, 3], stem: .imagenet)
    /// CIFAR: 9n + 2 layers with bottlenecks (164, 1001), 6n + 2 with basic blocks (110).
    public static let preact_resnet110 = PreActResNet(block: .basic, layers: [18, 18, 18], stem: .cifar)
    public static let preact_resnet164 = PreActResNet(block: .bottleneck, layers: [18, 18, 18], stem: .cifar)
    public static let preact_resnet1001 = PreActResNet(block: .bottleneck, layers: [111, 111, 111], stem: .cifar)

    /// WRN-depth-k for CIFAR: depth = 6n + 4, stages of 16k, 32k and 64k channels after a
    /// 16-channel stem.
    public static func wideResNet(depth: Int, widen: Int, dropout: Float = 0, classes: Int = 10) throws(CLNetError) -> PreActResNet {
        guard depth >= 10, (depth - 4) % 6 == 0 else {
            throw .invalidArgument("a Wide ResNet has 6n + 4 layers (16, 22, 28, 40); \(depth) is not one")
        }
        guard (0..<1).contains(dropout) else { throw .invalidArgument("dropout must be in [0, 1), not \(dropout)") }
        let n = (depth - 4) / 6
        var model = PreActResNet(block: .basic, layers: [n, n, n], stem: .cifar, widen: widen, dropout: dropout, classes: classes)
        model.baseWidth = 16
        return model
    }

    /// The graph for `batch` images of `size` x `size` pixels, returning the logits; with
    /// `loss`, a softmax cross-entropy node follows them.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        var b = GraphBuilder()
        let size = size ?? (stem == .imagenet ? 224 : 32)
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y: Value
        if stem == .imagenet {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: baseWidth, kernel: 7, stride: 2, padding: 3), name: "conv1")
            y = try b.norm(y, norm, relu: true, name: "bn1")
            y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "maxpool")
        } else {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: baseWidth, kernel: 3, padding: 1), name: "conv1")
        }
        let expansion = block == .basic ? 1 : 4
        var channels = baseWidth
        let blocks = layers.reduce(0, +)
        var blockIndex = 0
        for (stage, count) in layers.enumerated() {
            let planes = (baseWidth << stage) * widen
            for i in 0..<count {
                let stride = i == 0 && stage > 0 ? 2 : 1
                let name = "layer\(stage + 1).\(i)"
                // The ImageNet stem already ended in BN-ReLU; normalising again is what neither
                // fb.resnet.torch nor timm does.
                let pre = stage == 0 && i == 0 && stem == .imagenet ? y : try b.norm(y, norm, relu: true, name: "\(name).bn1")
                let shortcut = stride != 1 || channels != planes * expansion
                    ? try b.conv(pre, Conv2D(inChannels: channels, outChannels: planes * expansion, kernel: 1, stride: stride),
                                 name: "\(name).downsample.0")
                    : y
                var z: Value
                if block == .basic {
                    z = try b.conv(pre, Conv2D(inChannels: channels, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv1")
                    if dropout > 0 { z = try b.dropout(z, p: dropout, name: "\(name).dropout") }
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn2")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2")
                } else {
                    z = try b.conv(pre, Conv2D(inChannels: channels, outChannels: planes, kernel: 1), name: "\(name).conv1")
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn2")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv2")
                    if dropout > 0 { z = try b.dropout(z, p: dropout, name: "\(name).dropout") }
                    z = try b.norm(z, norm, relu: true, name: "\(name).bn3")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes * 4, kernel: 1), name: "\(name).conv3")
                }
                blockIndex += 1
                if stochasticDepth > 0 {
                    z = try b.stochasticDepth(z, p: stochasticDepth * Float(blockIndex) / Float(blocks), name: "\(name).drop_path")
                }
                y = try b.add(z, shortcut, name: "\(name).add")
                channels = planes * expansion
            }
        }
        y = try b.norm(y, norm, relu: true, name: "bn_final")
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }
}
