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
    /// Deformable convolutions (Dai et al. 2017) in place of the 3x3 convolutions of some
    /// stages; nil for none.
    public var deformable: Deformable? = nil
    /// The stages (1 to 4) whose residual branches use dendritic ReLU (Metta et al. 2023, see
    /// `DendriticConv2D`): each convolution that follows a norm and activation inside the branch
    /// (a basic block's second, a bottleneck's second and third) takes the norm's output, and
    /// its connections' own ReLUs replace that activation. Their biases start at 0, so the model
    /// starts as the plain one.
    public var dendriticStages: Set<Int> = []
    /// The classifier as a dendritic fully connected layer (`fc.dendrite_bias` beside `fc.weight`).
    public var dendriticHead = false
    /// Convolutions with learnable spacings (Khalfaoui-Hassani et al. 2023, see `DCLSConv2D`) in
    /// place of the 3x3 convolutions of some stages (as `deformable` places its units); nil for none.
    public var learnableSpacings: LearnableSpacings? = nil

    /// Where and how a ResNet's 3x3 convolutions become DCLS convolutions: in the stages listed,
    /// each with `count` elements per channel pair inside a `size` x `size` footprint (padded to
    /// keep the 3x3's output size).
    public struct LearnableSpacings: Sendable, Equatable {
        public var stages: Set<Int>
        public var size: Int
        public var count: Int

        public init(stages: Set<Int>, size: Int = 5, count: Int = 9) {
            self.stages = stages
            self.size = size
            self.count = count
        }
    }

    /// Where and how a ResNet's 3x3 convolutions are deformable: in the stages listed (1 to 4;
    /// the paper deforms the last ones), each a bottleneck's 3x3 convolution or both of a basic
    /// block's, with mmcv's unit and names (`GraphBuilder.deformableConv`).
    public struct Deformable: Sendable, Equatable {
        public var stages: Set<Int>
        /// The modulated form (v2, Zhu et al. 2019): a learned mask scales each sample.
        public var modulated: Bool
        /// Groups of channels with offsets of their own (mmcv's `deform_groups`).
        public var offsetGroups: Int

        public init(stages: Set<Int>, modulated: Bool = false, offsetGroups: Int = 1) {
            self.stages = stages
            self.modulated = modulated
            self.offsetGroups = offsetGroups
        }
    }

    /// What follows each norm and each residual addition.
    public enum Activation: String, Sendable {
        case relu
        /// One learnable slope per channel (He et al. 2015), with the convolutions' He
        /// initialisation scaled by 1 / sqrt(1 + 0.25^2) as that paper derives.
        case prelu
    }

    /// Channel attention inside each residual block, with timm's layers, names and widths.
    public enum Attention: Sendable, Equatable {
        case none
        /// Squeeze-and-excitation (Hu et al. 2018), timm's `SEModule`: global pooling, a 1x1
        /// reduction to C / `reduction` (rounded as timm's `make_divisible(v, 8, round_limit=0)`,
        /// at least 8) with ReLU, a 1x1 expansion with sigmoid, and the channel-wise rescaling of
        /// the branch before the addition.
        case squeezeExcitation(reduction: Int)
        /// Selective kernels (Li et al. 2019) in place of a bottleneck's 3x3 convolution, or of a
        /// basic block's first (see `SelectiveKernel`).
        case selectiveKernel(SelectiveKernel)
    }

    /// timm's `SelectiveKernel`: a 3x3 and a dilated 3x3 path (both grouped, each with norm and
    /// ReLU), fused by sum, pooled, reduced to `make_divisible(C / reduction, divisor)` features
    /// with batch norm and ReLU, expanded to one logit per path and channel; a softmax across the
    /// paths per channel weighs them.
    public struct SelectiveKernel: Sendable, Equatable {
        public var reduction: Int
        public var divisor: Int
        /// Each path convolves its own half of the input channels (timm's `split_input`), rather
        /// than both the whole input.
        public var splitInput: Bool

        public init(reduction: Int, divisor: Int, splitInput: Bool) {
            self.reduction = reduction
            self.divisor = divisor
            self.splitInput = splitInput
        }

        /// SKNet-50's unit (M = 2, r = 16, L = 32), which is timm's `skresnext50_32x4d`'s.
        public static let paper = SelectiveKernel(reduction: 16, divisor: 32, splitInput: false)
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
    /// SE-ResNets and SE-ResNeXt-50 (32x4d) of Hu et al. 2018, reduction 16, as timm builds them.
    public static let seresnet18 = ResNet.resnet18.with(attention: .squeezeExcitation(reduction: 16))
    public static let seresnet34 = ResNet.resnet34.with(attention: .squeezeExcitation(reduction: 16))
    public static let seresnet50 = ResNet.resnet50.with(attention: .squeezeExcitation(reduction: 16))
    public static let seresnext50_32x4d = ResNet.resnext50_32x4d.with(attention: .squeezeExcitation(reduction: 16))
    /// timm's selective-kernel ResNets: the 18 and 34 split each unit's input between the paths
    /// and reduce by 8 (divisor 16), the 50 splits and reduces by 16 (divisor 8).
    public static let skresnet18 = ResNet.resnet18.with(attention: .selectiveKernel(.init(reduction: 8, divisor: 16, splitInput: true)))
    public static let skresnet34 = ResNet.resnet34.with(attention: .selectiveKernel(.init(reduction: 8, divisor: 16, splitInput: true)))
    public static let skresnet50 = ResNet.resnet50.with(attention: .selectiveKernel(.init(reduction: 16, divisor: 8, splitInput: true)))
    /// SKNet-50 of Li et al. 2019: ResNeXt-50 (32x4d) with the paper's selective kernels, which
    /// is timm's `skresnext50_32x4d` (`sknet50` is the same network).
    public static let skresnext50_32x4d = ResNet.resnext50_32x4d.with(attention: .selectiveKernel(.paper))

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
        if deformable != nil, case .selectiveKernel = attention {
            throw .invalidArgument("deform and sk both replace the 3x3 convolutions; choose one")
        }
        let units = [("deform", deformable?.stages ?? []), ("dendritic", dendriticStages), ("dcls", learnableSpacings?.stages ?? [])]
        for (i, (a, sa)) in units.enumerated() {
            if let bad = sa.sorted().first(where: { !(1...layers.count).contains($0) }) {
                throw .invalidArgument("\(a) names stage \(bad); this ResNet has stages 1 to \(layers.count)")
            }
            for (b, sb) in units[(i + 1)...] {
                if let overlap = sa.intersection(sb).min() {
                    throw .invalidArgument("\(a) and \(b) both replace stage \(overlap)'s convolutions; give them different stages")
                }
            }
        }
        if !dendriticStages.isEmpty, activation == .prelu {
            // The dendrites' ReLUs replace the activation before them; with PReLU the network
            // would silently change its nonlinearity and no longer start as the plain one.
            throw .invalidArgument("dendritic replaces ReLUs with the dendrites' own; it does not combine with act=prelu")
        }
        if let spacings = learnableSpacings {
            if case .selectiveKernel = attention { throw .invalidArgument("dcls and sk both replace the 3x3 convolutions; choose one") }
            guard spacings.size >= 3, spacings.size % 2 == 1, spacings.count > 0 else {
                throw .invalidArgument("dcls_size=\(spacings.size) must be an odd footprint of at least 3, and dcls_count=\(spacings.count) positive")
            }
        }
        if case .selectiveKernel = attention, !dendriticStages.isEmpty {
            throw .invalidArgument("dendritic and sk both replace the blocks' convolutions; choose one")
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
                if case let .selectiveKernel(unit) = attention {
                    z = try selectiveKernelBranch(&b, y, unit, inplanes: inplanes, planes: planes, stride: stride, dilation: d,
                                                  width: blockWidths?[blockIndex], name: name)
                } else if block == .basic {
                    let inner = blockWidths?[blockIndex] ?? planes
                    z = try conv3x3(&b, y, Conv2D(inChannels: inplanes, outChannels: inner, kernel: 3, stride: stride, padding: 1),
                                    stage: stage, name: "\(name).conv1")
                    z = try innerNormAct(&b, z, stage: stage, "\(name).bn1", "\(name).act1")
                    z = try conv3x3(&b, z, Conv2D(inChannels: inner, outChannels: planes, kernel: 3, padding: 1), stage: stage,
                                    name: "\(name).conv2", dendritic: true)
                    z = try b.norm(z, norm, name: "\(name).bn2")
                } else {
                    let width = blockWidths?[blockIndex] ?? planes * widthPerGroup / 64 * groups
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: width, kernel: 1), name: "\(name).conv1")
                    z = try innerNormAct(&b, z, stage: stage, "\(name).bn1", "\(name).act1")
                    z = try conv3x3(&b, z, Conv2D(inChannels: width, outChannels: width, kernel: 3, stride: stride, padding: d,
                                                  dilation: d, groups: groups), stage: stage, name: "\(name).conv2", dendritic: true)
                    z = try innerNormAct(&b, z, stage: stage, "\(name).bn2", "\(name).act2")
                    let conv3 = Conv2D(inChannels: width, outChannels: planes * 4, kernel: 1)
                    z = dendriticStages.contains(stage + 1) ? try b.dendritic(z, DendriticConv2D(conv3), name: "\(name).conv3")
                        : try b.conv(z, conv3, name: "\(name).conv3")
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
        let logits = dendriticHead
            ? try b.dendritic(pooled, .linear(inFeatures: inplanes, outFeatures: classes), bias: true, name: "fc")
            : try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        if activation == .prelu {
            // He et al. 2015: with slope a, the variance-preserving gain is 2 / (1 + a^2).
            let gain = 1 / (1 + 0.25 * 0.25).squareRoot()
            for p in b.graph.parameters where p.role == .weight && p.shape.rank == 4 && p.initialization == .standard {
                try b.setInitialization(p.name, .scaled(gain))
            }
        }
        return (b.graph, logits)
    }

    /// A residual branch's 3x3 convolution: deformable in the stages `deformable` names;
    /// dendritic in the stages `dendriticStages` names when it follows the branch's activation.
    func conv3x3(_ b: inout GraphBuilder, _ x: Value, _ conv: Conv2D, stage: Int, name: String,
                 dendritic: Bool = false) throws(CLNetError) -> Value {
        if dendritic && dendriticStages.contains(stage + 1) { return try b.dendritic(x, DendriticConv2D(conv), name: name) }
        if let spacings = learnableSpacings, spacings.stages.contains(stage + 1) {
            guard conv.dilation == .init(1, 1) else {
                throw .invalidArgument("\(name): dcls learns the spacing that dilation fixes; do not combine it with dilation")
            }
            let footprint = Conv2D(inChannels: conv.inChannels, outChannels: conv.outChannels, kernel: spacings.size,
                                   stride: conv.stride.h, padding: spacings.size / 2, groups: conv.groups)
            return try b.dcls(x, DCLSConv2D(footprint, count: spacings.count), name: name)
        }
        guard let deformable, deformable.stages.contains(stage + 1) else { return try b.conv(x, conv, name: name) }
        return try b.deformableConv(x, conv, offsetGroups: deformable.offsetGroups, modulated: deformable.modulated, name: name)
    }

    /// A norm inside a residual branch, and its activation unless the stage is dendritic: there
    /// the next convolution's dendrites apply their own ReLUs.
    func innerNormAct(_ b: inout GraphBuilder, _ x: Value, stage: Int, _ normName: String,
                      _ act: String) throws(CLNetError) -> Value {
        dendriticStages.contains(stage + 1) ? try b.norm(x, norm, name: normName) : try normAct(&b, x, normName, act)
    }

    /// The norm and the activation after it: fused with ReLU, or a PReLU node named `act`.
    func normAct(_ b: inout GraphBuilder, _ x: Value, _ normName: String, _ act: String) throws(CLNetError) -> Value {
        if activation == .relu { return try b.norm(x, norm, relu: true, name: normName) }
        return try b.prelu(try b.norm(x, norm, name: normName), name: act)
    }
}
