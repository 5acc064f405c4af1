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
    /// The activation after each norm and each residual addition.
    public var activation: Activation = .relu
    /// Channel attention in each block (Hu et al. 2018; Li et al. 2019).
    public var attention: Attention = .none
    /// torchvision's `replace_stride_with_dilation` for stages 2, 3 and 4 (bottleneck blocks):
    /// the stage keeps its input's resolution and dilates its 3x3 convolutions instead, for
    /// dense prediction (Yu et al. 2017).
    public var replaceStrideWithDilation: [Bool] = [false, false, false]
    /// The stem's downsampling: max pooling (torchvision), or a strided 3x3 convolution with its
    /// norm and activation (the all-convolutional net of Springenberg et al. 2015).
    public var stemPool: StemPool = .max
    /// Each residual block's inner width (a basic block's first convolution, a bottleneck's
    /// first two), in block order, where filter pruning has narrowed them; nil: the stage's.
    public var blockWidths: [Int]? = nil

    /// What follows each norm and each residual addition.
    public enum Activation: String, Sendable {
        case relu
        /// One learnable slope per channel (He et al. 2015), with the convolutions' He
        /// initialisation scaled by 1 / sqrt(1 + 0.25^2) as that paper derives.
        case prelu
    }

    /// Channel attention inside each residual block.
    public enum Attention: Sendable, Equatable {
        case none
        /// Squeeze-and-excitation: global pooling, a 1x1 reduction by `reduction` with ReLU, a
        /// 1x1 expansion with sigmoid, and the channel-wise rescaling of the branch (before the
        /// addition), as SE-ResNet (Hu et al. 2018).
        case squeezeExcitation(reduction: Int)
        /// Selective kernels (Li et al. 2019), replacing each bottleneck's 3x3 convolution: a 3x3
        /// and a dilated 3x3 branch (both grouped), fused by sum, pooled, reduced to
        /// max(C / reduction, minimum) features with norm and ReLU, then a softmax across the
        /// branches per channel weighs them.
        case selectiveKernel(reduction: Int, minimum: Int)
    }

    public enum StemPool: String, Sendable {
        case max
        case conv
    }

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
    /// SE-ResNet-50 and SE-ResNeXt-50 (32x4d) of Hu et al. 2018, reduction 16.
    public static let seresnet50 = ResNet.resnet50.with(attention: .squeezeExcitation(reduction: 16))
    public static let seresnext50_32x4d = ResNet.resnext50_32x4d.with(attention: .squeezeExcitation(reduction: 16))
    /// SKNet-50 of Li et al. 2019: ResNeXt-50 (32x4d) with selective kernels, M = 2, r = 16, L = 32.
    public static let sknet50 = ResNet.resnext50_32x4d.with(attention: .selectiveKernel(reduction: 16, minimum: 32))

    func with(attention: Attention) -> ResNet {
        var m = self
        m.attention = attention
        return m
    }

    /// The graph for `batch` images of `size` x `size` pixels, returning the logits; with
    /// `loss`, a softmax cross-entropy node follows them.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        guard replaceStrideWithDilation.count == 3 else {
            throw .invalidArgument("replace_stride_with_dilation takes 3 flags (stages 2 to 4), not \(replaceStrideWithDilation.count)")
        }
        if block == .basic && replaceStrideWithDilation.contains(true) {
            // As torchvision: a basic block's two 3x3 convolutions would both need the dilation.
            throw .invalidArgument("dilation (replace_stride_with_dilation) needs bottleneck blocks, as in torchvision")
        }
        if block == .basic, case .selectiveKernel = attention {
            throw .invalidArgument("selective kernels replace a bottleneck's 3x3 convolution; use block=bottleneck")
        }
        if let widths = blockWidths, widths.count != layers.reduce(0, +) {
            throw .invalidArgument("mid gives \(widths.count) block widths; this ResNet has \(layers.reduce(0, +)) blocks")
        }
        var b = GraphBuilder()
        let size = size ?? (stem == .imagenet ? 224 : 32)
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y: Value
        if stem == .imagenet {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 7, stride: 2, padding: 3), name: "conv1")
            y = try normAct(&b, y, "bn1", "act1")
            if stemPool == .max {
                y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "maxpool")
            } else {
                y = try b.conv(y, Conv2D(inChannels: 64, outChannels: 64, kernel: 3, stride: 2, padding: 1), name: "pool.conv")
                y = try normAct(&b, y, "pool.bn", "pool.act")
            }
        } else {
            if stemPool == .conv {
                throw .invalidArgument("pool=conv replaces the ImageNet stem's max pooling; the CIFAR stem has none")
            }
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 3, padding: 1), name: "conv1")
            y = try normAct(&b, y, "bn1", "act1")
        }
        let expansion = block == .basic ? 1 : 4
        var inplanes = 64
        let blocks = layers.reduce(0, +)
        var blockIndex = 0
        var dilation = 1
        for (stage, count) in layers.enumerated() {
            let planes = 64 << stage
            var stageStride = stage > 0 ? 2 : 1
            let previousDilation = dilation
            if stage > 0 && stage <= 3 && replaceStrideWithDilation[stage - 1] {
                dilation *= stageStride
                stageStride = 1
            }
            for i in 0..<count {
                let stride = i == 0 ? stageStride : 1
                let d = i == 0 ? previousDilation : dilation
                let name = "layer\(stage + 1).\(i)"
                var shortcut = y
                if stride != 1 || inplanes != planes * expansion {
                    shortcut = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes * expansion, kernel: 1,
                                                    stride: stride), name: "\(name).downsample.0")
                    shortcut = try b.norm(shortcut, norm, name: "\(name).downsample.1")
                }
                var z: Value
                if block == .basic {
                    let inner = blockWidths?[blockIndex] ?? planes
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: inner, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv1")
                    z = try normAct(&b, z, "\(name).bn1", "\(name).act1")
                    z = try b.conv(z, Conv2D(inChannels: inner, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2")
                    z = try b.norm(z, norm, name: "\(name).bn2")
                } else {
                    let width = blockWidths?[blockIndex] ?? planes * widthPerGroup / 64 * groups
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: width, kernel: 1), name: "\(name).conv1")
                    z = try normAct(&b, z, "\(name).bn1", "\(name).act1")
                    if case let .selectiveKernel(reduction, minimum) = attention {
                        z = try selectiveKernel(&b, z, width: width, stride: stride, dilation: d, reduction: reduction,
                                                minimum: minimum, name: "\(name).conv2")
                    } else {
                        z = try b.conv(z, Conv2D(inChannels: width, outChannels: width, kernel: 3, stride: stride, padding: d,
                                                 dilation: d, groups: groups), name: "\(name).conv2")
                        z = try normAct(&b, z, "\(name).bn2", "\(name).act2")
                    }
                    z = try b.conv(z, Conv2D(inChannels: width, outChannels: planes * 4, kernel: 1), name: "\(name).conv3")
                    z = try b.norm(z, norm, name: "\(name).bn3")
                }
                if case let .squeezeExcitation(reduction) = attention {
                    z = try squeezeExcitation(&b, z, channels: planes * expansion, reduction: reduction, name: "\(name).se")
                }
                blockIndex += 1
                if stochasticDepth > 0 {
                    z = try b.stochasticDepth(z, p: stochasticDepth * Float(blockIndex) / Float(blocks), name: "\(name).drop_path")
                }
                if activation == .relu {
                    y = try b.add(z, shortcut, relu: true, name: "\(name).add")
                } else {
                    y = try b.add(z, shortcut, name: "\(name).add")
                    y = try b.prelu(y, name: "\(name).act\(block == .basic ? 2 : 3)")
                }
                inplanes = planes * expansion
            }
        }
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        if activation == .prelu {
            // He et al. 2015: with slope a, the variance-preserving gain is 2 / (1 + a^2).
            let gain = 1 / (1 + 0.25 * 0.25).squareRoot()
            for p in b.graph.parameters where p.role == .weight && p.shape.rank == 4 {
                try b.setInitialization(p.name, .scaled(gain))
            }
        }
        return (b.graph, logits)
    }

    /// The norm and the activation after it: fused with ReLU, or a PReLU node named `act`.
    private func normAct(_ b: inout GraphBuilder, _ x: Value, _ normName: String, _ act: String) throws(CLNetError) -> Value {
        if activation == .relu { return try b.norm(x, norm, relu: true, name: normName) }
        return try b.prelu(try b.norm(x, norm, name: normName), name: act)
    }

    /// Squeeze-and-excitation on the branch `x` of `channels` channels (names as timm's `se`).
    private func squeezeExcitation(_ b: inout GraphBuilder, _ x: Value, channels: Int, reduction: Int,
                                   name: String) throws(CLNetError) -> Value {
        var s = try b.globalAvgPool(x, name: "\(name).pool")
        s = try b.linear(s, outFeatures: max(1, channels / reduction), name: "\(name).fc1")
        s = try b.relu(s, name: "\(name).act")
        s = try b.linear(s, outFeatures: channels, name: "\(name).fc2")
        s = try b.sigmoid(s, name: "\(name).gate")
        return try b.channelScale(x, by: s, name: "\(name).scale")
    }

    /// A selective-kernel unit of two grouped 3x3 branches (dilation 1 and 2, each times the
    /// stage's own dilation), in place of a bottleneck's 3x3 convolution (names as timm's).
    private func selectiveKernel(_ b: inout GraphBuilder, _ x: Value, width: Int, stride: Int, dilation: Int, reduction: Int,
                                 minimum: Int, name: String) throws(CLNetError) -> Value {
        var paths: [Value] = []
        for m in 0..<2 {
            let d = dilation * (m + 1)
            var u = try b.conv(x, Conv2D(inChannels: width, outChannels: width, kernel: 3, stride: stride, padding: d,
                                         dilation: d, groups: groups), name: "\(name).paths.\(m).conv")
            u = try normAct(&b, u, "\(name).paths.\(m).bn", "\(name).paths.\(m).act")
            paths.append(u)
        }
        let fused = try b.add(paths[0], paths[1], name: "\(name).sum")
        var s = try b.globalAvgPool(fused, name: "\(name).attn.pool")
        s = try b.linear(s, outFeatures: max(width / reduction, minimum), bias: false, name: "\(name).attn.fc_reduce")
        s = try b.batchNorm(s, relu: true, name: "\(name).attn.bn")
        let logits = try b.linear(s, outFeatures: 2 * width, name: "\(name).attn.fc_select")
        return try b.selectiveSum(paths, logits: logits, name: "\(name).select")
    }
}
