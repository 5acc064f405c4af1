// The CIFAR-10 ResNets of He et al. 2015, section 4.2: a 3x3 convolution of 16 channels, three
// stages of n basic blocks at 16, 32 and 64 channels (the first block of the second and third
// stages halving the size), option-A shortcuts (subsample and zero-pad, no parameters), global
// pooling and a fully connected layer: 6n + 2 layers. Without norms it is Fixup's variant.

/// ResNet-20/32/44/56/110/1202 for 32x32 images (any channel count, e.g. 1 for Fashion-MNIST).
public struct CIFARResNet: Sendable {
    /// Blocks per stage: depth = 6n + 2.
    public var n: Int
    public var inChannels: Int = 3
    public var classes: Int = 10
    /// Batch norm (the paper's), group norm, or none: then the network is Fixup's (Zhang et al.
    /// 2019), which trains without normalisation (see `fixupGraph`).
    public var norm: NormChoice = .batch
    /// The activation after each norm and each residual addition.
    public var activation: ResNet.Activation = .relu
    /// Stochastic depth (Huang et al. 2016): the probability of dropping the last residual
    /// branch in training, decaying linearly to the first (0: off).
    public var stochasticDepth: Float = 0
    /// Each residual block's inner width (its first convolution's output channels), in block
    /// order, where filter pruning has narrowed them; nil: the stage's width, as the paper.
    public var blockWidths: [Int]? = nil
    /// Without norms: Fixup's initialisation (true), or the default one (He for convolutions,
    /// PyTorch's for the classifier), which `clnet train --init autoinit|gradinit` then adjusts.
    public var fixupInitialization = true

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
        if norm == .none { return try fixupGraph(batch: batch, size: size, loss: loss) }
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 16, kernel: 3, padding: 1), name: "conv1")
        y = try normAct(&b, y, "bn1", "act1")
        try forEachBlock { block throws(CLNetError) in
            let name = block.name
            var z = try b.conv(y, Conv2D(inChannels: block.inChannels, outChannels: block.inner, kernel: 3, stride: block.stride,
                                         padding: 1), name: "\(name).conv1")
            z = try normAct(&b, z, "\(name).bn1", "\(name).act1")
            z = try b.conv(z, Conv2D(inChannels: block.inner, outChannels: block.planes, kernel: 3, padding: 1), name: "\(name).conv2")
            z = try b.norm(z, norm, name: "\(name).bn2")
            y = try join(&b, branch: z, input: y, block)
        }
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        try scaleForPReLU(&b)
        return (b.graph, logits)
    }

    /// One residual block's place in the network: its name (`layer2.0`), its number from 0, its
    /// stride, and its input, inner and output widths.
    private struct Block {
        let name: String
        let index: Int, stride: Int
        let inChannels: Int, inner: Int, planes: Int
    }

    /// Calls `body` for every block of the three stages in order: 16, 32 and 64 planes, the
    /// first block of the second and third stages strided.
    private func forEachBlock(_ body: (Block) throws(CLNetError) -> Void) throws(CLNetError) {
        var channels = 16
        for stage in 0..<3 {
            let planes = 16 << stage
            for i in 0..<n {
                let index = stage * n + i
                try body(Block(name: "layer\(stage + 1).\(i)", index: index, stride: i == 0 && stage > 0 ? 2 : 1,
                               inChannels: channels, inner: try innerWidth(index, planes), planes: planes))
                channels = planes
            }
        }
    }

    /// Block `block`'s inner width: `blockWidths`' entry, else the stage's `planes`.
    private func innerWidth(_ block: Int, _ planes: Int) throws(CLNetError) -> Int {
        guard let widths = blockWidths else { return planes }
        guard widths.count == 3 * n else {
            throw .invalidArgument("mid gives \(widths.count) block widths; a CIFAR ResNet of depth \(6 * n + 2) has \(3 * n) blocks")
        }
        return widths[block]
    }

    /// The norm and the activation after it: fused with ReLU, or a PReLU node named `act`.
    private func normAct(_ b: inout GraphBuilder, _ x: Value, _ normName: String, _ act: String) throws(CLNetError) -> Value {
        if activation == .relu { return try b.norm(x, norm, relu: true, name: normName) }
        return try b.prelu(try b.norm(x, norm, name: normName), name: act)
    }

    private func activate(_ b: inout GraphBuilder, _ x: Value, _ name: String) throws(CLNetError) -> Value {
        activation == .relu ? try b.relu(x, name: name) : try b.prelu(x, name: name)
    }

    /// The end of a residual block: stochastic depth on the branch, the
    /// option-A shortcut where the shape changes, the addition and its activation.
    private func join(_ b: inout GraphBuilder, branch: Value, input y: Value, _ block: Block) throws(CLNetError) -> Value {
        var z = branch
        let name = block.name
        if stochasticDepth > 0 {
            z = try b.stochasticDepth(z, p: stochasticDepth * Float(block.index + 1) / Float(3 * n), name: "\(name).drop_path")
        }
        let shortcut = block.stride != 1 || block.inChannels != block.planes
            ? try b.padShortcut(y, outChannels: block.planes, stride: block.stride, name: "\(name).shortcut") : y
        if activation == .relu { return try b.add(z, shortcut, relu: true, name: "\(name).add") }
        return try b.prelu(try b.add(z, shortcut, name: "\(name).add"), name: "\(name).act2")
    }

    /// He et al. 2015: with PReLU slopes starting at a = 0.25 the variance-preserving gain is
    /// 2 / (1 + a^2), so every convolution starts smaller by sqrt(1 + a^2).
    private func scaleForPReLU(_ b: inout GraphBuilder) throws(CLNetError) {
        guard activation == .prelu else { return }
        for p in b.graph.parameters where p.role == .weight && p.shape.rank == 4 && p.initialization == .standard {
            try b.setInitialization(p.name, .scaled(1 / (1 + 0.25 * 0.25).squareRoot()))
        }
    }

    /// Fixup (Zhang et al. 2019, the CIFAR ResNet of its code): no norms; a learnable scalar bias
    /// before each convolution and activation and before the classifier, a scalar multiplier at
    /// the end of each branch, and an initialisation that keeps the output's scale bounded at any
    /// depth: each branch's first convolution He-initialised and scaled by L^(-1/2) (L = 3n
    /// branches of two layers), its last convolution and the classifier zero. Parameter names
    /// are Fixup's (`bias1a`, `bias1b`, `bias2a`, `scale`, `bias2b`, `bias1`, `bias2`).
    func fixupGraph(batch: Int, size: Int, loss: Bool) throws(CLNetError) -> (graph: Graph, logits: Value) {
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, inChannels, size, size])
        var y = try b.conv(x, Conv2D(inChannels: inChannels, outChannels: 16, kernel: 3, padding: 1), name: "conv1")
        y = try b.scalarAffine(y, scale: nil, bias: "bias1", name: "bias1")
        y = try activate(&b, y, "act1")
        let depthScale = 1 / Double(3 * n).squareRoot()
        try forEachBlock { block throws(CLNetError) in
            let name = block.name
            var z = try b.scalarAffine(y, scale: nil, bias: "\(name).bias1a", name: "\(name).bias1a")
            z = try b.conv(z, Conv2D(inChannels: block.inChannels, outChannels: block.inner, kernel: 3, stride: block.stride,
                                     padding: 1), name: "\(name).conv1")
            if fixupInitialization { try b.setInitialization("\(name).conv1.weight", .scaled(depthScale)) }
            z = try b.scalarAffine(z, scale: nil, bias: "\(name).bias1b", name: "\(name).bias1b")
            z = try activate(&b, z, "\(name).act1")
            z = try b.scalarAffine(z, scale: nil, bias: "\(name).bias2a", name: "\(name).bias2a")
            z = try b.conv(z, Conv2D(inChannels: block.inner, outChannels: block.planes, kernel: 3, padding: 1), name: "\(name).conv2")
            if fixupInitialization { try b.setInitialization("\(name).conv2.weight", .constant(0)) }
            z = try b.scalarAffine(z, scale: "\(name).scale", bias: "\(name).bias2b", name: "\(name).affine")
            y = try join(&b, branch: z, input: y, block)
        }
        var pooled = try b.globalAvgPool(y, name: "avgpool")
        pooled = try b.scalarAffine(pooled, scale: nil, bias: "bias2", name: "bias2")
        let logits = try b.linear(pooled, outFeatures: classes, name: "fc")
        if fixupInitialization {
            try b.setInitialization("fc.weight", .constant(0))
            try b.setInitialization("fc.bias", .constant(0))
        }
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        try scaleForPReLU(&b)
        return (b.graph, logits)
    }
}
