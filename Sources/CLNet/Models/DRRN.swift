// DRRN (Tai, Yang and Liu 2017, "Image Super-Resolution via Deep Recursive Residual Network"):
// B recursive blocks, each a 3x3 convolution followed by U residual units that share one pair of
// 3x3 convolutions (the recursion), every unit adding the block's first output (local residual
// learning); a last convolution back to the image's channels, added to the input (global
// residual learning). The input is the low-resolution image scaled up by bicubic interpolation,
// and the network predicts the high-resolution one; it trains on the mean squared error.
//
// The layers are pre-activation ReLU-conv, as the paper's figure 3; there is no batch norm and
// no bias, as in the common PyTorch port (yjn870/DRRN-pytorch), which gives the paper's 297K
// parameters for DRRN_B1U25 (the authors' Caffe files add batch norm and biases, which that
// count leaves out). Depth: (1 + 2U) B + 1 convolutions.
//
// Names: `blockB.input` (the block's first convolution), `blockB.conv1` and `blockB.conv2` (the
// shared pair, as applied by the first unit; unit u's applications are `blockB.unitU.conv1/2`,
// the same parameters), and `output`.

/// DRRN for single-image super-resolution: B recursive blocks of U residual units, `width`
/// filters, on `channels` image channels (1: luminance, as the paper; 3: RGB).
public struct DRRN: Sendable {
    public var blocks: Int
    public var units: Int
    public var width: Int = 128
    public var channels: Int = 1

    public init(blocks: Int, units: Int, width: Int = 128, channels: Int = 1) {
        (self.blocks, self.units, self.width, self.channels) = (blocks, units, width, channels)
    }

    /// DRRN_B1U25, the paper's 52-layer network.
    public static let b1u25 = DRRN(blocks: 1, units: 25)

    /// Convolutions along the network: (1 + 2U) B + 1.
    public var depth: Int { (1 + 2 * units) * blocks + 1 }

    /// The graph for `batch` images of `size` x `size` pixels: input `input` (the bicubic
    /// upscaled image), returning the predicted image; with `loss`, a mean squared error against
    /// the graph input `target` follows it.
    public func graph(batch: Int, size: Int = 31, loss: Bool = true) throws(CLNetError) -> (graph: Graph, logits: Value) {
        guard blocks >= 1, units >= 1, width >= 1, channels >= 1 else {
            throw .invalidArgument("DRRN needs at least one block, one unit, one filter and one channel (b=\(blocks), u=\(units))")
        }
        var b = GraphBuilder()
        let x = try b.input("input", shape: [batch, channels, size, size])
        func conv(_ v: Value, _ i: Int, _ o: Int, _ name: String) throws(CLNetError) -> Value {
            try b.conv(try b.relu(v, name: "\(name).relu"), Conv2D(inChannels: i, outChannels: o, kernel: 3, padding: 1), name: name)
        }
        var h = x, inChannels = channels
        for block in 0..<blocks {
            let name = "block\(block)"
            let first = try conv(h, inChannels, width, "\(name).input")
            h = first
            for u in 0..<units {
                // The first unit defines the pair; the others apply it again.
                let a = u == 0 ? try conv(h, width, width, "\(name).conv1")
                    : try b.reapply("\(name).conv1", to: [try b.relu(h, name: "\(name).unit\(u).conv1.relu")], name: "\(name).unit\(u).conv1")
                let c = u == 0 ? try conv(a, width, width, "\(name).conv2")
                    : try b.reapply("\(name).conv2", to: [try b.relu(a, name: "\(name).unit\(u).conv2.relu")], name: "\(name).unit\(u).conv2")
                h = try b.add(c, first, name: "\(name).unit\(u).add")
            }
            inChannels = width
        }
        let out = try b.add(try conv(h, width, channels, "output"), x, name: "global_residual")
        // The last convolution starts at zero, so that the network starts as the identity on
        // its bicubic input: from He's scale the recursion's output was 0.4 off in mean squared
        // error, and SGD at 0.01 diverged within ten steps.
        try b.setInitialization("output.weight", .constant(0))
        if loss {
            let target = try b.input("target", shape: b.shape(out))
            _ = try b.meanSquaredError(out, target: target, name: "loss")
        }
        return (b.graph, out)
    }
}
