// Spike-element-wise ResNets (Fang et al. 2021), as SpikingJelly's `sew_resnet.py` builds them:
// torchvision's ResNet with spiking neurons where the ReLUs were, run over T time steps.

/// SEW ResNet: every ReLU of torchvision's ResNet becomes a layer of spiking neurons (after each
/// norm, and after the downsampling shortcut's norm), and a block joins its shortcut and its
/// branch's spikes by a spike-element-wise function (`SEWConnect`) instead of an addition and a
/// ReLU. The image is repeated at each of the T steps (SpikingJelly's
/// `x.unsqueeze(0).repeat(T, 1, 1, 1, 1)`), the network runs on the T*N samples (its batch norms
/// over all of them), and the logits are the mean of the classifier's output over the steps.
/// Parameter names are SpikingJelly's, which are torchvision's.
public struct SEWResNet: Sendable {
    public var block: ResNet.Block
    public var layers: [Int]
    public var classes: Int = 1000
    public var inChannels: Int = 3
    public var stem: ResNet.Stem = .imagenet
    /// The neurons, with the time steps T.
    public var neuron: SpikingNeuron
    public var connect: SEWConnect

    /// The paper's ImageNet setting: IF neurons with the arctangent surrogate and the reset
    /// detached, T = 4, ADD connections.
    public init(block: ResNet.Block, layers: [Int], neuron: SpikingNeuron = SpikingNeuron(steps: 4), connect: SEWConnect = .add) {
        self.block = block
        self.layers = layers
        self.neuron = neuron
        self.connect = connect
    }

    public static let sew_resnet18 = SEWResNet(block: .basic, layers: [2, 2, 2, 2])
    public static let sew_resnet34 = SEWResNet(block: .basic, layers: [3, 4, 6, 3])
    public static let sew_resnet50 = SEWResNet(block: .bottleneck, layers: [3, 4, 6, 3])
    public static let sew_resnet101 = SEWResNet(block: .bottleneck, layers: [3, 4, 23, 3])
    public static let sew_resnet152 = SEWResNet(block: .bottleneck, layers: [3, 8, 36, 3])

    /// The graph for `batch` images of `size` x `size`, returning the logits [N, classes] (the
    /// mean over the steps); with `loss`, a softmax cross-entropy node follows them.
    public func graph(batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        try neuron.check([neuron.steps, 1])
        guard !layers.isEmpty, layers.count <= 4 else {
            throw .invalidArgument("a SEW ResNet has 1 to 4 stages, not \(layers.count)")
        }
        let side = size ?? (stem == .imagenet ? 224 : 32)
        let t = neuron.steps
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, inChannels, side, side])
        var y = try b.timeRepeat(x, steps: t, name: "repeat")
        if stem == .imagenet {
            y = try b.conv(y, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 7, stride: 2, padding: 3), name: "conv1")
        } else {
            y = try b.conv(y, Conv2D(inChannels: inChannels, outChannels: 64, kernel: 3, padding: 1), name: "conv1")
        }
        y = try spikes(&b, try b.batchNorm(y, name: "bn1"), "sn1")
        if stem == .imagenet { y = try b.maxPool(y, Pool2D(kernel: 3, stride: 2, padding: 1), name: "maxpool") }
        let expansion = block == .basic ? 1 : 4
        var inplanes = 64
        for (stage, count) in layers.enumerated() {
            let planes = 64 << stage
            for i in 0..<count {
                let stride = i == 0 && stage > 0 ? 2 : 1
                let name = "layer\(stage + 1).\(i)"
                var shortcut = y
                if stride != 1 || inplanes != planes * expansion {
                    shortcut = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes * expansion, kernel: 1, stride: stride),
                                          name: "\(name).downsample.0")
                    shortcut = try spikes(&b, try b.batchNorm(shortcut, name: "\(name).downsample.1"), "\(name).downsample_sn")
                }
                var z: Value
                if block == .basic {
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv1")
                    z = try spikes(&b, try b.batchNorm(z, name: "\(name).bn1"), "\(name).sn1")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2")
                    z = try spikes(&b, try b.batchNorm(z, name: "\(name).bn2"), "\(name).sn2")
                } else {
                    z = try b.conv(y, Conv2D(inChannels: inplanes, outChannels: planes, kernel: 1), name: "\(name).conv1")
                    z = try spikes(&b, try b.batchNorm(z, name: "\(name).bn1"), "\(name).sn1")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes, kernel: 3, stride: stride, padding: 1),
                                   name: "\(name).conv2")
                    z = try spikes(&b, try b.batchNorm(z, name: "\(name).bn2"), "\(name).sn2")
                    z = try b.conv(z, Conv2D(inChannels: planes, outChannels: planes * 4, kernel: 1), name: "\(name).conv3")
                    z = try spikes(&b, try b.batchNorm(z, name: "\(name).bn3"), "\(name).sn3")
                }
                y = connect == .add ? try b.add(shortcut, z, name: "\(name).connect")
                    : try b.sewConnect(shortcut, z, connect, name: "\(name).connect")
                inplanes = planes * expansion
            }
        }
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let perStep = try b.linear(pooled, outFeatures: classes, name: "fc")
        let logits = try b.timeMean(perStep, steps: t, name: "mean")
        if loss { _ = try b.softmaxCrossEntropy(logits, name: "loss") }
        return (b.graph, logits)
    }

    private func spikes(_ b: inout GraphBuilder, _ x: Value, _ name: String) throws(CLNetError) -> Value {
        try b.spikingNeuron(x, neuron, name: name)
    }
}
