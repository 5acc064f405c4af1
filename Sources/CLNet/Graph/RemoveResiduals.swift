// Residual-to-plain re-parameterisation: the RM operation of Meng et al. ("RMNet: Equivalently
// Removing Residual Connection from Networks", 2021) for basic blocks after batch-norm folding.
//
// A basic block computes relu(conv2(relu(conv1(x))) + shortcut(x)) where x >= 0 (it comes out of
// a ReLU). The first convolution gets Cin more output channels that copy x through a Dirac kernel
// (its centre tap); the ReLU after it leaves them unchanged because x >= 0; the second
// convolution reads them back through its own centre tap, as the identity, the CIFAR ResNets'
// zero-padded subsampling or the folded 1x1 projection, and adds them to its output. The sum
// that the addition computed is then inside the second convolution, and the block is two plain
// convolutions with ReLUs. A strided block's Dirac taps sample x where the shortcut samples it.

/// A graph with its residual connections removed (see `Graph.removingResiduals`).
public struct PlainGraph: Sendable {
    /// The block as it was: node indices in the batch-norm-folded graph (`fold.graph`).
    public struct Block: Sendable, Equatable {
        public let conv1: Int, relu1: Int, conv2: Int, add: Int
        /// The projection convolution (folded 1x1 with bias), the zero-padding shortcut, or
        /// neither for the identity.
        public let projection: Int?, padShortcut: Int?
        /// Skipped in inference: the branch's stochastic depth node, if any.
        public let stochasticDepth: Int?
    }

    /// The plain graph.
    public let graph: Graph
    /// The batch-norm folding it starts from.
    public let fold: FoldedGraph
    /// The blocks that were rewritten.
    public let blocks: [Block]
    /// For each value of the original graph, the value holding it in `graph` (nil inside blocks).
    public let values: [Value?]
}

extension Graph {
    /// The graph with batch norm folded and every basic residual block rewritten as two plain
    /// convolutions with biases and ReLUs (RMNet): no addition is left, and inference gives the
    /// same logits. A block qualifies when its input comes out of a ReLU, its two convolutions are
    /// ungrouped with odd kernels centred by their padding, and its shortcut is the identity, a
    /// zero-padding subsample or a 1x1 projection with the first convolution's stride. Any
    /// residual addition that does not qualify throws, naming it and why.
    public func removingResiduals() throws(CLNetError) -> PlainGraph {
        let fold = try foldingBatchNorms()
        let g = fold.graph
        var consumers = [Int](repeating: 0, count: g.shapes.count)
        for node in g.nodes { for v in node.inputs { consumers[v.index] += 1 } }
        func producer(_ v: Value) -> Int? { g.producers[v.index] }
        func only(_ v: Value) -> Bool { consumers[v.index] == 1 }
        var blocks: [PlainGraph.Block] = []
        for (a, node) in g.nodes.enumerated() {
            guard case let .add(relu) = node.operation else { continue }
            func refuse(_ why: String) -> CLNetError {
                .invalidArgument("cannot remove the residual connection at \(node.name): \(why); RM needs ReLU basic blocks (resnet18/34, the CIFAR ResNets)")
            }
            guard relu else { throw refuse("the addition has no ReLU after it") }
            var branch = node.inputs[0]
            var drop: Int? = nil
            if let k = producer(branch), case .stochasticDepth = g.nodes[k].operation, only(branch) {
                drop = k
                branch = g.nodes[k].inputs[0]
            }
            guard let c2 = producer(branch), case let .conv(conv2, true) = g.nodes[c2].operation, only(branch),
                  let r1 = producer(g.nodes[c2].inputs[0]), g.nodes[r1].operation == .relu, only(g.nodes[c2].inputs[0]),
                  let c1 = producer(g.nodes[r1].inputs[0]), case let .conv(conv1, true) = g.nodes[c1].operation,
                  only(g.nodes[r1].inputs[0]) else {
                throw refuse("its branch is not convolution, norm, ReLU, convolution, norm")
            }
            let x = g.nodes[c1].inputs[0]
            guard centred(conv1) && centred(conv2) && conv2.stride == Conv2D.Pair(1, 1) else {
                throw refuse("its convolutions must be ungrouped with odd kernels centred by their padding, the second of stride 1")
            }
            guard g.isNonNegative(x) else { throw refuse("the block's input does not come out of a ReLU, so the reserved channels would lose its negative part") }
            let shortcut = node.inputs[1]
            var projection: Int? = nil, pad: Int? = nil
            if shortcut != x {
                guard let k = producer(shortcut), only(shortcut), g.nodes[k].inputs == [x] else {
                    throw refuse("its branch and its shortcut do not start from the same value (a bottleneck block has three convolutions)")
                }
                switch g.nodes[k].operation {
                case let .conv(p, _) where p.kernel == .init(1, 1) && p.padding == .init(0, 0) && p.groups == 1
                    && p.dilation == .init(1, 1) && p.stride == conv1.stride:
                    projection = k
                case let .padShortcut(op) where op.stride == conv1.stride.h && conv1.stride.h == conv1.stride.w:
                    pad = k
                default:
                    throw refuse("its shortcut is neither the identity, a zero-padding subsample nor a 1x1 projection of the first convolution's stride")
                }
            } else if conv1.stride != .init(1, 1) {
                throw refuse("an identity shortcut beside a strided convolution")
            }
            blocks.append(.init(conv1: c1, relu1: r1, conv2: c2, add: a, projection: projection, padShortcut: pad, stochasticDepth: drop))
        }
        var replaced: [Int: PlainGraph.Block] = [:], inside: Set<Int> = []
        for block in blocks {
            replaced[block.conv1] = block
            inside.formUnion([block.conv1, block.relu1, block.conv2, block.add] + [block.projection, block.padShortcut, block.stochasticDepth].compactMap { $0 })
        }
        var b = GraphBuilder()
        var map = [Value?](repeating: nil, count: g.shapes.count)
        for (name, v) in g.inputs { map[v.index] = try b.input(name, shape: g.shape(of: v)) }
        for (k, node) in g.nodes.enumerated() {
            if let block = replaced[k] {
                guard case let .conv(conv1, _) = node.operation, case let .conv(conv2, _) = g.nodes[block.conv2].operation else { continue }
                let x = map[node.inputs[0].index]!
                var wide1 = conv1
                wide1.outChannels += conv1.inChannels
                var wide2 = conv2
                wide2.inChannels += conv1.inChannels
                var y = try b.conv(x, wide1, bias: true, name: node.name)
                y = try b.relu(y, name: g.nodes[block.relu1].name)
                y = try b.conv(y, wide2, bias: true, name: g.nodes[block.conv2].name)
                map[g.nodes[block.add].output.index] = try b.relu(y, name: "\(g.nodes[block.add].name).relu")
            } else if !inside.contains(k) {
                map[node.output.index] = try b.replay(node, of: g, inputs: node.inputs.map { map[$0.index]! })
            }
        }
        let values = fold.values.map { v in v.flatMap { map[$0.index] } }
        return PlainGraph(graph: b.graph, fold: fold, blocks: blocks, values: values)
    }

    /// The plain graph's parameters from this graph's trained ones (batch norm folded, then each
    /// block's convolutions widened by the Dirac channels; see `removingResiduals`).
    public func removeResidualParameters(_ plain: PlainGraph, _ values: [String: [Float]]) throws(CLNetError) -> [String: [Float]] {
        var out = try foldBatchNormParameters(plain.fold, values)
        let g = plain.fold.graph
        for block in plain.blocks {
            guard case let .conv(conv1, _) = g.nodes[block.conv1].operation,
                  case let .conv(conv2, _) = g.nodes[block.conv2].operation else { continue }
            let (n1, n2) = (g.nodes[block.conv1].name, g.nodes[block.conv2].name)
            let cin = conv1.inChannels, mid = conv1.outChannels, cout = conv2.outChannels
            let (k1h, k1w, k2h, k2w) = (conv1.kernel.h, conv1.kernel.w, conv2.kernel.h, conv2.kernel.w)
            let w1 = out["\(n1).weight"]!, b1 = out["\(n1).bias"]!, w2 = out["\(n2).weight"]!
            var b2 = out["\(n2).bias"]!
            // conv1: its own filters, then one Dirac filter per input channel.
            var wide1 = w1 + [Float](repeating: 0, count: cin * cin * k1h * k1w)
            for c in 0..<cin { wide1[(((mid + c) * cin + c) * k1h + k1h / 2) * k1w + k1w / 2] = 1 }
            // conv2: its own filters read the first `mid` channels; the shortcut reads the rest
            // through the centre tap.
            let width = mid + cin
            var wide2 = [Float](repeating: 0, count: cout * width * k2h * k2w)
            for o in 0..<cout {
                for i in 0..<(mid * k2h * k2w) { wide2[o * width * k2h * k2w + i] = w2[o * mid * k2h * k2w + i] }
            }
            func centre(_ o: Int, _ c: Int) -> Int { ((o * width + mid + c) * k2h + k2h / 2) * k2w + k2w / 2 }
            if let p = block.projection {
                let name = g.nodes[p].name
                let wp = out["\(name).weight"]!
                for o in 0..<cout { for c in 0..<cin { wide2[centre(o, c)] = wp[o * cin + c] } }
                if let bp = out["\(name).bias"] { for o in 0..<cout { b2[o] += bp[o] } }
                out["\(name).weight"] = nil
                out["\(name).bias"] = nil
            } else {
                let offset = (cout - cin) / 2  // zero padding splits the new channels evenly, as PadShortcut
                for c in 0..<cin { wide2[centre(c + offset, c)] = 1 }
            }
            out["\(n1).weight"] = wide1
            out["\(n1).bias"] = b1 + [Float](repeating: 0, count: cin)
            out["\(n2).weight"] = wide2
            out["\(n2).bias"] = b2
        }
        for p in plain.graph.parameters where out[p.name]?.count != p.shape.count {
            throw .invalidShape(operation: "removing residuals", message: "parameter \(p.name) came out with \(out[p.name]?.count ?? 0) values, not \(p.shape.count)")
        }
        return out.filter { name, _ in plain.graph.parameterIndex(name) != nil }
    }

    /// Whether `v` is never negative by construction: a ReLU's output, or max pooling of one.
    func isNonNegative(_ v: Value) -> Bool {
        guard let k = producers[v.index] else { return false }
        switch nodes[k].operation {
        case .relu, .add(relu: true), .batchNorm(relu: true, _, _), .groupNorm(_, relu: true, _): return true
        case .maxPool: return isNonNegative(nodes[k].inputs[0])
        default: return false
        }
    }
}

/// Whether a convolution's centre tap reads the input pixel its output pixel sits on (odd kernel,
/// padding = (kernel - 1) / 2 x dilation, one group), so a Dirac kernel there copies its input.
private func centred(_ c: Conv2D) -> Bool {
    c.groups == 1 && c.kernel.h % 2 == 1 && c.kernel.w % 2 == 1
        && c.padding.h == (c.kernel.h - 1) / 2 * c.dilation.h && c.padding.w == (c.kernel.w - 1) / 2 * c.dilation.w
}
