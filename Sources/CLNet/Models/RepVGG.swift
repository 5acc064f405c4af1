// RepVGG (Ding et al. 2021): a plain stack of 3x3 convolutions and ReLUs at inference, trained
// as a multi-branch network. Each training-time block sums a 3x3 convolution with batch norm, a
// 1x1 convolution with batch norm and, where the shape allows, a batch norm of the input alone;
// all three are linear in the input, so `Graph.reparameterizingBranches` merges them into one
// 3x3 convolution with a bias (`clnet export --reparam`).

/// RepVGG-A0 to B3, or any stage layout, with an optional linear cascade branch (a 1x1 then a
/// 3x3 convolution with no nonlinearity between, as in linear over-parameterisation: KFLO,
/// ExpandNets, DBB's 1x1-kxk branch), which merges the same way.
public struct RepVGG: Sendable {
    /// Blocks per stage; the first block of each stage is strided (the paper's A: 1.2.4.14.1).
    public var layers: [Int]
    /// Width multipliers: stages 1 to 3 have 64a, 128a, 256a channels, the last 512b, the first
    /// min(64, 64a).
    public var a: Double
    public var b: Double
    public var inChannels: Int = 3
    public var classes: Int = 1000
    /// `.imagenet` strides every stage (224 to 7); `.cifar` leaves the first stage at stride 1
    /// for 32x32 or 28x28 inputs.
    public var stem: ResNet.Stem = .imagenet
    /// Adds the linear cascade branch to every block.
    public var cascade: Bool = false

    public init(layers: [Int], a: Double, b: Double) {
        self.layers = layers
        self.a = a
        self.b = b
    }

    public static let a0 = RepVGG(layers: [1, 2, 4, 14, 1], a: 0.75, b: 2.5)
    public static let a1 = RepVGG(layers: [1, 2, 4, 14, 1], a: 1, b: 2.5)
    public static let a2 = RepVGG(layers: [1, 2, 4, 14, 1], a: 1.5, b: 2.75)
    public static let b0 = RepVGG(layers: [1, 4, 6, 16, 1], a: 1, b: 2.5)
    public static let b1 = RepVGG(layers: [1, 4, 6, 16, 1], a: 2, b: 4)

    /// Each stage's output channels.
    func widths() throws(CLNetError) -> [Int] {
        guard layers.count == 5 else {
            throw .invalidArgument("RepVGG has 5 stages; layers=\(layers.map(String.init).joined(separator: ".")) gives \(layers.count)")
        }
        guard layers.allSatisfy({ $0 >= 1 && $0 <= 10_000 }) else {
            throw .invalidArgument("RepVGG's stages need 1 to 10000 blocks each, not \(layers)")
        }
        guard a > 0, b > 0, a <= 64, b <= 64 else {
            throw .invalidArgument("RepVGG's width multipliers must be above 0 and at most 64, not a=\(a), b=\(b)")
        }
        let base = [64, 64, 128, 256].map { Int((Double($0) * a).rounded()) }
        return [min(64, base[0]), base[1], base[2], base[3], Int((512 * b).rounded())]
    }

    /// The graph for `batch` images of `size` x `size` (default 224, or 32 with the CIFAR stem).
    /// Parameter names are timm's (`repvgg_a0` ...): the first stage is `stem`, the others
    /// `stages.0` to `stages.3`, each block `conv_kxk`, `conv_1x1` and `identity` (and
    /// `cascade_1x1`, `cascade_kxk` for the cascade), the classifier `head.fc`; merged, a block
    /// is `reparam_conv`, as timm's `reparameterize_model` names it.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        let widths = try widths()
        var b = GraphBuilder()
        let side = size ?? (stem == .cifar ? 32 : 224)
        var y = try b.input("input", shape: [batch, inChannels, side, side])
        var channels = inChannels
        for (s, count) in layers.enumerated() {
            for i in 0..<count {
                let stride = i == 0 && (s > 0 || stem == .imagenet) ? 2 : 1
                let name = s > 0 ? "stages.\(s - 1).\(i)" : count == 1 ? "stem" : "stem.\(i)"
                y = try block(&b, y, from: channels, to: widths[s], stride: stride, name: name)
                channels = widths[s]
            }
        }
        let pooled = try b.globalAvgPool(y, name: "head.pool")
        let logits = try b.linear(pooled, outFeatures: classes, name: "head.fc")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }

    /// ReLU(BN(conv3x3 x) + BN(conv1x1 x) [+ BN(x)] [+ BN(conv3x3(conv1x1 x))]).
    private func block(_ b: inout GraphBuilder, _ x: Value, from: Int, to: Int, stride: Int, name: String)
        throws(CLNetError) -> Value {
        var branches: [Value] = []
        let kxk = try b.conv(x, Conv2D(inChannels: from, outChannels: to, kernel: 3, stride: stride, padding: 1),
                             name: "\(name).conv_kxk.conv")
        branches.append(try b.batchNorm(kxk, name: "\(name).conv_kxk.bn"))
        let pointwise = try b.conv(x, Conv2D(inChannels: from, outChannels: to, kernel: 1, stride: stride),
                                   name: "\(name).conv_1x1.conv")
        branches.append(try b.batchNorm(pointwise, name: "\(name).conv_1x1.bn"))
        if from == to && stride == 1 { branches.append(try b.batchNorm(x, name: "\(name).identity")) }
        if cascade {
            let expand = try b.conv(x, Conv2D(inChannels: from, outChannels: from, kernel: 1), name: "\(name).cascade_1x1")
            let c = try b.conv(expand, Conv2D(inChannels: from, outChannels: to, kernel: 3, stride: stride, padding: 1),
                               name: "\(name).cascade_kxk.conv")
            branches.append(try b.batchNorm(c, name: "\(name).cascade_kxk.bn"))
        }
        var sum = branches[0]
        for (k, branch) in branches.dropFirst().enumerated() {
            sum = try b.add(sum, branch, relu: k == branches.count - 2, name: "\(name).add\(k + 1)")
        }
        return sum
    }
}
