// The Residual Attention Network (Wang et al. 2017, "Residual Attention Network for Image
// Classification"), as the authors' Caffe models (fwang91/residual-attention-network,
// Attention-56/92-deploy.prototxt) lay it out: pre-activation bottleneck units without biases,
// stacked with Attention Modules.
//
// An Attention Module (p = 1, t = 2, r = 1) is one unit, then a trunk of two units T(x) beside
// a soft-mask branch M(x) that pools down and interpolates back up: max pooling then one unit per
// level (two at the lowest), a skip unit from each level but the lowest, and on the way up a
// bilinear interpolation to the level's size, the skip added, one unit. At the trunk's size,
// BN-ReLU-1x1-BN-ReLU-1x1 and a sigmoid end it. The output is (1 + M(x)) * T(x) (attention
// residual learning), then one more unit. The mask pools three times in the first stage, twice
// in the second and once in the third, so its lowest level sits at the same size in every stage.
//
// Names: `conv1`, `bn1`, `stageS.unitK` for the units between modules, `stageS.moduleK.first`,
// `.trunk.I`, `.mask.downL`, `.mask.bottom`, `.mask.skipL`, `.mask.upL`, `.mask.bn1/conv1/bn2/conv2`, `.last`;
// a unit's parts are `bn1/conv1/bn2/conv2/bn3/conv3` and `shortcut` (a 1x1 projection of the
// pre-activated input, where the width or stride changes). The head is `bn_final`, then `fc`.

/// The Residual Attention Network for ImageNet (Attention-56, Attention-92) or CIFAR.
public struct ResidualAttentionNetwork: Sendable {
    /// Attention Modules per stage: 1.1.1 for Attention-56, 1.2.3 for Attention-92; the CIFAR
    /// networks have m per stage, for 36m + 20 layers (Attention-92: m = 2).
    public var modules: [Int]
    /// ImageNet: a 7x7 stride-2 convolution to `width` channels, BN-ReLU and max pooling; then
    /// four stages (the last three plain units, the first at stride 2). CIFAR: a 3x3
    /// convolution to `width` channels; three stages, then two plain units.
    public var stem: ResNet.Stem
    /// The stem's channels and the first stage's bottleneck width (64 for ImageNet, 16 for CIFAR);
    /// stage s has 4 * width * 2^s channels.
    public var width: Int
    public var classes: Int
    /// Input channels (3 for RGB).
    public var inChannels: Int = 3
    /// Batch norm (the paper's) or group norm.
    public var norm: NormChoice = .batch

    public init(modules: [Int], stem: ResNet.Stem, width: Int? = nil, classes: Int? = nil) {
        self.modules = modules
        self.stem = stem
        self.width = width ?? (stem == .imagenet ? 64 : 16)
        self.classes = classes ?? (stem == .imagenet ? 1000 : 10)
    }

    public static let attention56 = ResidualAttentionNetwork(modules: [1, 1, 1], stem: .imagenet)
    public static let attention92 = ResidualAttentionNetwork(modules: [1, 2, 3], stem: .imagenet)
    /// The CIFAR Attention-92: two modules per stage, stages of 64, 128 and 256 channels.
    public static let attentionCIFAR = ResidualAttentionNetwork(modules: [2, 2, 2], stem: .cifar)

    /// A pre-activation bottleneck unit from `inChannels` to `out`, its 3x3 convolution at `stride`.
    static func unit(_ b: inout GraphBuilder, _ x: Value, _ inChannels: Int, _ out: Int, stride: Int = 1, norm: NormChoice,
                     name: String) throws(CLNetError) -> Value {
        let mid = out / 4
        let pre = try b.norm(x, norm, relu: true, name: "\(name).bn1")
        var z = try b.conv(pre, Conv2D(inChannels: inChannels, outChannels: mid, kernel: 1), name: "\(name).conv1")
        z = try b.norm(z, norm, relu: true, name: "\(name).bn2")
        z = try b.conv(z, Conv2D(inChannels: mid, outChannels: mid, kernel: 3, stride: stride, padding: 1), name: "\(name).conv2")
        z = try b.norm(z, norm, relu: true, name: "\(name).bn3")
        z = try b.conv(z, Conv2D(inChannels: mid, outChannels: out, kernel: 1), name: "\(name).conv3")
        let shortcut = inChannels != out || stride != 1
            ? try b.conv(pre, Conv2D(inChannels: inChannels, outChannels: out, kernel: 1, stride: stride), name: "\(name).shortcut")
            : x
        return try b.add(z, shortcut, name: "\(name).add")
    }

    /// An Attention Module of `c` channels whose mask pools `levels` times.
    func module(_ b: inout GraphBuilder, _ x: Value, _ c: Int, levels: Int, name: String) throws(CLNetError) -> Value {
        func unit(_ v: Value, _ n: String) throws(CLNetError) -> Value { try Self.unit(&b, v, c, c, norm: norm, name: "\(name).\(n)") }
        let first = try unit(x, "first")
        let trunk = try unit(try unit(first, "trunk.0"), "trunk.1")
        // Bottom-up: the units after each pooling, and a skip unit from each level but the lowest.
        var down = first, skips: [Value] = []
        for level in 0..<levels {
            down = try b.maxPool(down, Pool2D(kernel: 3, stride: 2, padding: 1), name: "\(name).mask.pool\(level)")
            down = try unit(down, "mask.down\(level)")
            if level < levels - 1 { skips.append(try unit(down, "mask.skip\(level)")) }
        }
        var up = try unit(down, "mask.bottom")
        // Top-down: back up to each skip's size, add the skip, one unit.
        for level in (0..<levels - 1).reversed() {
            let s = b.shape(skips[level])
            up = try b.upsample(up, .bilinear, height: s.h, width: s.w, name: "\(name).mask.interp\(level + 1)")
            up = try b.add(up, skips[level], name: "\(name).mask.add\(level)")
            up = try unit(up, "mask.up\(level)")
        }
        let t = b.shape(trunk)
        up = try b.upsample(up, .bilinear, height: t.h, width: t.w, name: "\(name).mask.interp0")
        up = try b.norm(up, norm, relu: true, name: "\(name).mask.bn1")
        up = try b.conv(up, Conv2D(inChannels: c, outChannels: c, kernel: 1), name: "\(name).mask.conv1")
        up = try b.norm(up, norm, relu: true, name: "\(name).mask.bn2")
        up = try b.conv(up, Conv2D(inChannels: c, outChannels: c, kernel: 1), name: "\(name).mask.conv2")
        let mask = try b.sigmoid(up, name: "\(name).mask.sigmoid")
        // (1 + M) * T = M * T + T.
        let attended = try b.add(try b.multiply(mask, trunk, name: "\(name).attend"), trunk, name: "\(name).residual")
        return try unit(attended, "last")
    }

    /// The graph for `batch` images of `size` x `size` pixels, returning the logits; with
    /// `loss`, a softmax cross-entropy node follows them.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        guard modules.count == 3, modules.allSatisfy({ $0 >= 1 }) else {
            throw .invalidArgument("a Residual Attention Network has three stages of at least one Attention Module each, not \(modules)")
        }
        var b = GraphBuilder()
        let size = size ?? (stem == .imagenet ? 224 : 32)
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y: Value
        if stem == .imagenet {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: width, kernel: 7, stride: 2, padding: 3), name: "conv1")
            y = try b.norm(y, norm, relu: true, name: "bn1")
            y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "maxpool")
        } else {
            y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: width, kernel: 3, padding: 1), name: "conv1")
        }
        var channels = width
        for (stage, count) in modules.enumerated() {
            let c = 4 * width << stage
            y = try Self.unit(&b, y, channels, c, stride: stage == 0 ? 1 : 2, norm: norm, name: "stage\(stage + 1).unit0")
            channels = c
            for k in 0..<count {
                y = try module(&b, y, c, levels: 3 - stage, name: "stage\(stage + 1).module\(k)")
            }
        }
        // ImageNet's fourth stage is three units that double the width at stride 2; CIFAR's is
        // two that keep both, which gives the paper's trainable counts, 1.9M for Attention-92
        // and 5.1M for Attention-236 (the paper has no CIFAR layout table).
        let last = stem == .imagenet ? 2 * channels : channels
        for k in 0..<(stem == .imagenet ? 3 : 2) {
            y = try Self.unit(&b, y, k == 0 ? channels : last, last, stride: k == 0 && stem == .imagenet ? 2 : 1, norm: norm,
                              name: "stage4.unit\(k)")
        }
        y = try b.norm(y, norm, relu: true, name: "bn_final")
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }
}
