// Branch re-parameterisation (RepVGG, Ding et al. 2021; linear over-parameterisation as in
// KFLO, ExpandNets and DBB): in inference, where batch norms use running statistics, a sum of
// branches that are each linear in the same input is one convolution with a bias. A branch is a
// convolution and its batch norm, a 1x1 then a kxk convolution and a batch norm (a linear
// cascade), a batch norm of the input alone, or the input itself. The merged kernel is the
// largest branch's, each smaller one centred in it, and the identity is a kernel with a single 1.

/// One branch of a merged sum, by node indices of the original graph.
public enum LinearBranch: Sendable, Equatable {
    /// norm(conv(x)).
    case conv(norm: Int, conv: Int)
    /// norm(outer(inner(x))), inner a 1x1 convolution without bias.
    case cascade(norm: Int, outer: Int, inner: Int)
    /// norm(x), or x itself (nil).
    case identity(norm: Int?)
}

/// A sum of branches that the rewrite made one convolution.
public struct MergedBranches: Sendable {
    /// The addition nodes of the sum; the last is the one whose output (and ReLU) it replaces.
    public let adds: [Int]
    public let branches: [LinearBranch]
    /// The value every branch is linear in.
    public let input: Value
    /// The merged convolution, and its name in the rewritten graph (`<prefix>reparam_conv`,
    /// the prefix the branches' names share).
    public let conv: Conv2D
    public let name: String
}

/// A graph with its branch sums merged, and the map from the original's values to its own.
public struct ReparameterizedGraph: Sendable {
    public let graph: Graph
    /// For each value of the original graph, the value that holds it (nil inside a merged sum).
    public let values: [Value?]
    public let merges: [MergedBranches]
}

extension Graph {
    /// The graph with every sum of linear branches of one input merged into one convolution with
    /// a bias (`<prefix>reparam_conv`), followed by a ReLU node (`<prefix>act`) where the sum's
    /// last addition had one. A sum is merged when it has at least two branches, one of them a
    /// convolution, all with the same input, stride and groups, odd square kernels padded to
    /// keep their centre, no dilation, and intermediate values that nothing else reads. Other
    /// nodes are kept. `reparameterizeBranchParameters` maps the weights.
    public func reparameterizingBranches() throws(CLNetError) -> ReparameterizedGraph {
        try refuseSharedParameters("re-parameterising branches")
        var consumers = [Int](repeating: 0, count: shapes.count)
        for node in nodes { for v in node.inputs { consumers[v.index] += 1 } }
        var merges: [Int: MergedBranches] = [:], absorbed: Set<Int> = [], inner: Set<Int> = []
        var names = Set(nodes.map(\.name))
        for j in nodes.indices.reversed() where !inner.contains(j) {
            guard case .add = nodes[j].operation else { continue }
            var adds: [Int] = [], leaves: [Value] = []
            collectSum(j, consumers, &adds, &leaves)
            // A sum that does not merge may hold one that does: (3x3 + 1x1) + shortcut.
            guard let merge = try mergeable(adds: adds, leaves: leaves, consumers, taken: &names) else { continue }
            inner.formUnion(adds)
            merges[j] = merge
            absorbed.formUnion(merge.adds)
            for branch in merge.branches {
                switch branch {
                case let .conv(norm, conv): absorbed.formUnion([norm, conv])
                case let .cascade(norm, outer, inner): absorbed.formUnion([norm, outer, inner])
                case let .identity(norm): if let norm { absorbed.insert(norm) }
                }
            }
        }
        var b = GraphBuilder()
        var map = [Value?](repeating: nil, count: shapes.count)
        for (name, v) in inputs { map[v.index] = try b.input(name, shape: shape(of: v)) }
        for (k, node) in nodes.enumerated() {
            if let merge = merges[k] {
                var y = try b.conv(map[merge.input.index]!, merge.conv, bias: true, name: merge.name)
                if case .add(relu: true) = node.operation {
                    y = try b.relu(y, name: String(merge.name.dropLast("reparam_conv".count)) + "act")
                }
                map[node.output.index] = y
            } else if !absorbed.contains(k) {
                map[node.output.index] = try b.replay(node, of: self, inputs: node.inputs.map { map[$0.index]! })
            }
        }
        return ReparameterizedGraph(graph: b.graph, values: map, merges: merges.sorted { $0.key < $1.key }.map(\.value))
    }

    /// The merged graph's parameters from this graph's: each merged convolution's weight and
    /// bias, from its branches' weights and their norms' running statistics (in Double, rounded
    /// to Float once); every other parameter as it is.
    public func reparameterizeBranchParameters(_ r: ReparameterizedGraph, _ values: [String: [Float]])
        throws(CLNetError) -> [String: [Float]] {
        func value(_ p: Int) throws(CLNetError) -> [Double] {
            try checkedParameter(p, in: values, for: "re-parameterising branches").map(Double.init)
        }
        var out: [String: [Float]] = [:], consumed: Set<Int> = []
        for merge in r.merges {
            let c = merge.conv, k = c.kernel.h, per = c.inChannels / c.groups
            var weight = [Double](repeating: 0, count: c.weightShape.count), bias = [Double](repeating: 0, count: c.outChannels)
            // Adds `w` (o, i, kw x kw, centred) times the norm's scale, and the norm's shift.
            func add(_ w: [Double], kernel kw: Int, ownBias: [Double]?, norm: Int?) throws(CLNetError) {
                var scale = [Double](repeating: 1, count: c.outChannels), shift = [Double](repeating: 0, count: c.outChannels)
                if let norm {
                    (scale, shift) = try batchNormAffine(norm, values, for: "re-parameterising branches")
                    consumed.formUnion(nodes[norm].parameters)
                }
                let off = (k - kw) / 2
                for o in 0..<c.outChannels {
                    for i in 0..<per {
                        for y in 0..<kw {
                            for x in 0..<kw {
                                weight[((o * per + i) * k + y + off) * k + x + off] += w[((o * per + i) * kw + y) * kw + x] * scale[o]
                            }
                        }
                    }
                    bias[o] += shift[o] + (ownBias?[o] ?? 0) * scale[o]
                }
            }
            for branch in merge.branches {
                switch branch {
                case let .conv(norm, conv):
                    guard case let .conv(cc, hasBias) = nodes[conv].operation else { continue }
                    let p = nodes[conv].parameters
                    try add(try value(p[0]), kernel: cc.kernel.h, ownBias: hasBias ? try value(p[1]) : nil, norm: norm)
                    consumed.formUnion(p)
                case let .cascade(norm, outer, innerConv):
                    guard case let .conv(oc, hasBias) = nodes[outer].operation, case let .conv(ic, _) = nodes[innerConv].operation else { continue }
                    // W[o, i] = sum over m of outer[o, m] inner[m, i], tap by tap.
                    let wo = try value(nodes[outer].parameters[0]), wi = try value(nodes[innerConv].parameters[0])
                    let taps = oc.kernel.h * oc.kernel.w, mid = ic.outChannels
                    var w = [Double](repeating: 0, count: c.outChannels * per * taps)
                    for o in 0..<c.outChannels {
                        for m in 0..<mid {
                            for i in 0..<per {
                                for t in 0..<taps { w[(o * per + i) * taps + t] += wo[(o * mid + m) * taps + t] * wi[m * per + i] }
                            }
                        }
                    }
                    try add(w, kernel: oc.kernel.h, ownBias: hasBias ? try value(nodes[outer].parameters[1]) : nil, norm: norm)
                    consumed.formUnion(nodes[outer].parameters + nodes[innerConv].parameters)
                case let .identity(norm):
                    var w = [Double](repeating: 0, count: c.outChannels * per)
                    for o in 0..<c.outChannels { w[o * per + o % per] = 1 }
                    try add(w, kernel: 1, ownBias: nil, norm: norm)
                }
            }
            out["\(merge.name).weight"] = weight.map(Float.init)
            out["\(merge.name).bias"] = bias.map(Float.init)
        }
        for (i, p) in parameters.enumerated() where !consumed.contains(i) { out[p.name] = try value(i).map(Float.init) }
        return out
    }

    /// The leaves of the sum whose last addition is node `j`: additions without ReLU whose output
    /// only that sum reads are part of it.
    private func collectSum(_ j: Int, _ consumers: [Int], _ adds: inout [Int], _ leaves: inout [Value]) {
        for v in nodes[j].inputs {
            if let p = producers[v.index], case .add(relu: false) = nodes[p].operation, consumers[v.index] == 1 {
                collectSum(p, consumers, &adds, &leaves)
            } else {
                leaves.append(v)
            }
        }
        adds.append(j)
    }

    /// The sum's merge, or nil where a branch is not linear in a common input.
    private func mergeable(adds: [Int], leaves: [Value], _ consumers: [Int], taken: inout Set<String>)
        throws(CLNetError) -> MergedBranches? {
        let out = shape(of: nodes[adds.last!].output)
        guard leaves.count >= 2, out.rank == 4 else { return nil }
        // Each leaf's readings as a branch, with the input it is linear in: a convolution whose
        // input is a single-use 1x1 convolution may be read either way.
        func readings(_ v: Value) -> [(LinearBranch, Value)] {
            guard consumers[v.index] == 1, let n = producers[v.index], case .batchNorm(relu: false, _, _) = nodes[n].operation else {
                return [(.identity(norm: nil), v)]
            }
            let u = nodes[n].inputs[0]
            guard consumers[u.index] == 1, let c = producers[u.index], case let .conv(conv, _) = nodes[c].operation,
                  Self.centred(conv) else {
                return [(.identity(norm: n), u)]
            }
            var found = [(LinearBranch.conv(norm: n, conv: c), nodes[c].inputs[0])]
            let w = nodes[c].inputs[0]
            if conv.groups == 1, consumers[w.index] == 1, let i = producers[w.index], case let .conv(pointwise, false) = nodes[i].operation,
               pointwise.kernel == .init(1, 1), pointwise.stride == .init(1, 1), pointwise.padding == .init(0, 0), pointwise.groups == 1 {
                found.append((.cascade(norm: n, outer: c, inner: i), nodes[i].inputs[0]))
            }
            return found
        }
        let options = leaves.map(readings)
        for (_, x) in options[0] {
            let chosen = options.compactMap { $0.first { $0.1 == x }?.0 }
            guard chosen.count == leaves.count else { continue }
            let convs: [Conv2D] = chosen.compactMap { branch in
                switch branch {
                case let .conv(_, c): if case let .conv(conv, _) = nodes[c].operation { return conv }
                case let .cascade(_, c, _): if case let .conv(conv, _) = nodes[c].operation { return conv }
                case .identity: break
                }
                return nil
            }
            guard let first = convs.first, convs.allSatisfy({ $0.stride == first.stride && $0.groups == first.groups }) else { continue }
            let input = shape(of: x)
            // An identity branch needs the output's shape: stride 1 and as many channels.
            if convs.count < chosen.count, input != out || first.stride != .init(1, 1) { continue }
            let k = convs.map(\.kernel.h).max()!
            let merged = Conv2D(inChannels: input.c, outChannels: out.c, kernel: .init(k, k), stride: first.stride,
                                padding: .init(k / 2, k / 2), dilation: .init(1, 1), groups: first.groups)
            guard (try? merged.outputShape(input)) == out else { continue }
            var name = mergedName(chosen, adds)
            let act = { (n: String) in String(n.dropLast("reparam_conv".count)) + "act" }
            if taken.contains(name) || taken.contains(act(name)) { name = nodes[adds.last!].name + ".reparam_conv" }
            guard !taken.contains(name), !taken.contains(act(name)) else { continue }
            taken.formUnion([name, act(name)])
            return MergedBranches(adds: adds, branches: chosen, input: x, conv: merged, name: name)
        }
        return nil
    }

    /// An odd square kernel padded by half its size, without dilation: it keeps its centre where
    /// a larger kernel has its own.
    private static func centred(_ c: Conv2D) -> Bool {
        c.kernel.h == c.kernel.w && c.kernel.h % 2 == 1 && c.padding == .init(c.kernel.h / 2, c.kernel.h / 2)
            && c.dilation == .init(1, 1)
    }

    /// `<prefix>reparam_conv`: the prefix up to a dot that the branches' node names share, else
    /// the last addition's name and a dot.
    private func mergedName(_ branches: [LinearBranch], _ adds: [Int]) -> String {
        let names: [String] = branches.compactMap { branch in
            switch branch {
            case let .conv(norm, _), let .cascade(norm, _, _): nodes[norm].name
            case let .identity(norm): norm.map { nodes[$0].name }
            }
        }
        var prefix = names.first ?? ""
        for name in names.dropFirst() { while !name.hasPrefix(prefix) { prefix.removeLast() } }
        if let dot = prefix.lastIndex(of: ".") { return String(prefix[...dot]) + "reparam_conv" }
        return nodes[adds.last!].name + ".reparam_conv"
    }
}
