// DenseASPP (Yang et al. 2018, "DenseASPP for Semantic Segmentation in Street Scenes"), as the
// authors' code lays it out (DeepMotionAIResearch/DenseASPP, models/DenseASPP.py): a DenseNet
// whose last two blocks dilate instead of pooling (output stride 8), a transition halving its
// channels and a batch norm, then densely connected atrous convolutions at rates 3, 6, 12, 18
// and 24. Each branch is [BN]-ReLU-1x1-BN-ReLU-3x3 at its rate, then dropout, and its output is
// concatenated in front of everything before it, so every later branch sees every earlier one.
// A 1x1 convolution classifies each pixel, and bilinear interpolation takes the map to the
// input's size. The branches' convolutions and the classifier have biases; the backbone's do not.
//
// Names as that code's: `features.*` (torchvision's DenseNet names, plus
// `features.transition4`), `ASPP_<rate>.norm.1/conv.1/norm.2/conv.2` and `classification.1`.
// Its Dropout2d drops whole channels; CLNet's dropout drops single values, with the same rate.

/// DenseASPP for semantic segmentation: a dilated DenseNet backbone and densely connected
/// atrous spatial pyramid pooling.
public struct DenseASPP: Sendable {
    /// The backbone; its stem, blocks, growth, bottleneck and compression are used, not its head.
    public var backbone: DenseNet
    /// Each branch's 1x1 reduction (the code's d_feature0) and its dilated 3x3 output (d_feature1).
    public var reduction: Int
    public var branch: Int
    public var rates: [Int] = [3, 6, 12, 18, 24]
    /// Dropout after each branch and before the classifier.
    public var dropout: Float = 0.1
    /// Classes per pixel (19 for Cityscapes).
    public var classes: Int = 19
    /// The label of pixels that count for nothing: 255, as Cityscapes' and CLNet's
    /// segmentation data (`SegmentationDataset.ignoreIndex`).
    public var ignoreIndex: Int = SegmentationDataset.ignoreIndex

    public init(backbone: DenseNet, reduction: Int, branch: Int) {
        (self.backbone, self.reduction, self.branch) = (backbone, reduction, branch)
    }

    /// The code's configurations for each DenseNet.
    public static let densenet121 = DenseASPP(backbone: .densenet121, reduction: 128, branch: 64)
    public static let densenet161 = DenseASPP(backbone: .densenet161, reduction: 512, branch: 128)
    public static let densenet169 = DenseASPP(backbone: .densenet169, reduction: 336, branch: 168)
    public static let densenet201 = DenseASPP(backbone: .densenet201, reduction: 480, branch: 240)

    /// The graph for `batch` images of `size` x `size` pixels, returning the per-pixel logits
    /// [N, classes, size, size]; with `loss`, a per-pixel cross-entropy follows them, whose
    /// labels (one per pixel, `ignoreIndex` for none) are given when it runs.
    public func graph(batch: Int, size: Int = 512, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        guard backbone.blocks.count == 4, !rates.isEmpty, rates.allSatisfy({ $0 >= 1 }), reduction >= 1, branch >= 1 else {
            throw .invalidArgument("DenseASPP takes a four-block DenseNet and positive rates and widths (rates \(rates))")
        }
        guard (0..<1).contains(dropout) else { throw .invalidArgument("DenseASPP dropout must be in [0, 1), not \(dropout)") }
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, backbone.inChannels, size, size])
        let norm = backbone.norm
        var (y, channels) = try backbone.features(&b, x, dilated: true)
        y = try b.norm(y, norm, relu: true, name: "features.transition4.norm")
        y = try b.conv(y, Conv2D(inChannels: channels, outChannels: channels / 2, kernel: 1), name: "features.transition4.conv")
        channels /= 2
        var feature = try b.norm(y, norm, name: "features.norm5")
        for (i, rate) in rates.enumerated() {
            let name = "ASPP_\(rate)"
            // The first branch reads norm5's output directly; the others normalise the concatenation.
            var z = i == 0 ? try b.relu(feature, name: "\(name).relu.1") : try b.norm(feature, norm, relu: true, name: "\(name).norm.1")
            z = try b.conv(z, Conv2D(inChannels: channels, outChannels: reduction, kernel: 1), bias: true, name: "\(name).conv.1")
            z = try b.norm(z, norm, relu: true, name: "\(name).norm.2")
            z = try b.conv(z, Conv2D(inChannels: reduction, outChannels: branch, kernel: 3, padding: rate, dilation: rate), bias: true,
                           name: "\(name).conv.2")
            if dropout > 0 { z = try b.dropout(z, p: dropout, name: "\(name).dropout") }
            feature = try b.concat([z, feature], name: "\(name).concat")
            channels += branch
        }
        if dropout > 0 { feature = try b.dropout(feature, p: dropout, name: "classification.0") }
        var logits = try b.conv(feature, Conv2D(inChannels: channels, outChannels: classes, kernel: 1), bias: true,
                                name: "classification.1")
        logits = try b.upsample(logits, .bilinear, height: size, width: size, name: "classification.2")
        if loss { _ = try b.pixelCrossEntropy(logits, ignoreIndex: ignoreIndex, name: "loss") }
        return (b.graph, logits)
    }
}
