/// Where each activation and activation gradient lives in one arena, from their lifetimes.
///
/// The schedule is the forward nodes in order, then (in training) the backward steps. A forward
/// value lives from the node that makes it to its last use, which in training includes the
/// backward steps that read it (a convolution's backward reads its input; a ReLU's, its output).
/// A gradient lives from the first backward step that writes it to the step of its producer.
/// Buffers whose lifetimes do not overlap share memory; offsets are chosen first-fit, largest
/// buffer first.
///
/// Concatenations are free where the graph allows it (DenseNet): the inputs of a concat node are
/// placed as channel slices of its output, so each producer writes straight into the block
/// buffer and the concat itself does nothing, forward and backward. Chains of concats (each dense
/// layer's input is the previous one's output plus a slice) collapse into one buffer per block.
public struct MemoryPlan: Sendable {
    /// The passes the plan may merge into their neighbours. Each has its switch, so that a test
    /// (or a bisection) can run the same graph fused and unfused; results agree to rounding.
    public struct Fusions: OptionSet, Sendable, Hashable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// A ReLU or residual addition right after a convolution with a bias (a batch-norm-folded
        /// network) runs in the convolution's bias pass (`planEpilogues`).
        public static let convolutionEpilogue = Fusions(rawValue: 1 << 0)
        /// The backward of a ReLU or residual addition that consumes a norm's output runs inside
        /// the norm's backward (`planNormConsumers`, `NormConsumer`).
        public static let normBackward = Fusions(rawValue: 1 << 1)

        /// A training batch norm over channels whose statistics an earlier batch norm measured
        /// (a DenseNet block's buffer, which each layer's norm reads a longer prefix of) takes
        /// them from that norm (`planSharedStatistics`, `KnownStatistics`).
        public static let sharedStatistics = Fusions(rawValue: 1 << 2)

        /// A convolution writes the batch statistics of its output as it stores it, for the
        /// training batch norm right after it (`planConvolutionStatistics`, `WrittenStatistics`).
        /// Not in `all`: on PoCL it has not measured faster. The GEMM's products ran about 10%
        /// longer with it, more than the norms' statistics pass it saves, and with the partials
        /// laid out part by part, two rounds disagreed (Benchmarks/RESULTS.md). Ask for it with
        /// `Fusions.all.union(.convolutionStatistics)` (`clnet-bench model --convolution-statistics`).
        public static let convolutionStatistics = Fusions(rawValue: 1 << 3)

        /// The fusions that measured faster, which executors run by default.
        public static let all: Fusions = [.convolutionEpilogue, .normBackward, .sharedStatistics]
    }

    /// A norm node whose backward also does that of the node consuming its output.
    public struct NormFusion: Sendable, Equatable {
        /// The consuming ReLU or addition, whose own backward step then does nothing.
        public let consumer: Int
        /// For an addition, the position of its other input among its inputs, whose gradient
        /// the norm's backward writes; nil for a ReLU or where that input needs no gradient.
        public let shortcutInput: Int?

        public init(consumer: Int, shortcutInput: Int?) { (self.consumer, self.shortcutInput) = (consumer, shortcutInput) }
    }

    /// Where a value placed inside a concatenation lives: channels starting at `channel` of `root`.
    public struct ChannelView: Sendable, Equatable {
        public let root: Value
        public let channel: Int
        /// Whether the value's gradient is a slice of the root's gradient too.
        public let hasGradient: Bool
    }

    /// A buffer of the plan: an activation or an activation gradient.
    public struct Slot: Sendable {
        public let value: Value
        public let isGradient: Bool
        public let floats: Int
        /// First and last schedule step (inclusive) at which it is live.
        public let first: Int, last: Int
        /// Offset in the arena, in floats.
        public internal(set) var offset: Int = 0
    }

    public private(set) var slots: [Slot] = []
    /// Values computed in place, over the memory of an input that dies at that node (an add or
    /// a ReLU): value -> the value whose slot it shares.
    public private(set) var inPlace: [Value: Value] = [:]
    /// Values placed as channel slices of a concatenation's output.
    public private(set) var views: [Value: ChannelView] = [:]
    /// Concat nodes that need no work because every input is a slice of their output.
    public private(set) var freeConcats: Set<Int> = []
    /// Residual additions and ReLUs that run in the epilogue of the convolution before them
    /// (convolution node -> the fused node, which then does nothing): see `planEpilogues`.
    public private(set) var epilogues: [Int: Int] = [:]
    /// The nodes in `epilogues`' values.
    public private(set) var fusedNodes: Set<Int> = []
    /// Norm node -> the ReLU or addition after it whose backward it does (training only).
    public private(set) var normFusions: [Int: NormFusion] = [:]
    /// The nodes in `normFusions`' values: their backward steps do nothing.
    public private(set) var absorbedBackward: Set<Int> = []
    /// Training batch norm -> the earlier batch norm whose statistics it takes for its first
    /// channels (all of that norm's): see `planSharedStatistics`.
    public private(set) var sharedStatistics: [Int: Int] = [:]
    /// Convolution -> the training batch norm after it, for which it writes the statistics of
    /// its output where its algorithm can (`Conv2D.statisticsParts`): see
    /// `planConvolutionStatistics`.
    public private(set) var convolutionStatistics: [Int: Int] = [:]
    /// Elements of the arena: the plan's peak. (Named for float32; a 16-bit executor stores
    /// the same elements in half the bytes.)
    public private(set) var arenaFloats = 0

    /// Bytes of the arena at float32.
    public var peakBytes: Int { arenaFloats * 4 }
    /// Bytes of the arena with activations stored as `precision`.
    public func peakBytes(_ precision: Precision) -> Int { arenaFloats * precision.bytes }
    /// Bytes if every activation and gradient had its own buffer (aligned alike).
    public var naiveBytes: Int { (slots.reduce(0) { $0 + Self.aligned($1.floats) } + sharedFloats) * 4 }
    /// Floats of the values computed in place or placed in a concatenation, which a naive
    /// allocation would give their own buffers.
    private var sharedFloats = 0

    /// Sizes are rounded to 64 elements (256 bytes at float32, 128 at 16 bits), which every
    /// OpenCL device accepts as an alignment and which keeps vector loads aligned.
    static func aligned(_ n: Int) -> Int { (n + 63) / 64 * 64 }

    /// Arena offset of a value's activation (or gradient), if the plan holds it in a slot of its
    /// own (values in `views` live inside their root's slot).
    public func offset(of value: Value, gradient: Bool = false) -> Int? {
        let owner = gradient ? value : storageOwner(of: value)
        return slots.first { $0.value == owner && $0.isGradient == gradient }?.offset
    }

    /// The value whose slot holds `value`'s activation (itself unless computed in place).
    public func storageOwner(of value: Value) -> Value {
        var v = value
        while let h = inPlace[v] { v = h }
        return v
    }

    /// Where a value's activation (or gradient) lives in the arena: its first float and the
    /// distance between its samples, which is more than a sample's size for a channel slice of a
    /// concatenation. Nil for a gradient the plan does not hold. The executor makes its tensors
    /// from this, and the task schedule its memory ranges, so that the two agree.
    public func placement(of value: Value, gradient: Bool = false, in graph: Graph) -> (offset: Int, batchStride: Int)? {
        if let view = views[value], !gradient || view.hasGradient {
            guard let root = placement(of: view.root, gradient: gradient, in: graph) else { return nil }
            let s = graph.shape(of: view.root)
            return (root.offset + view.channel * s.h * s.w, root.batchStride)
        }
        guard let offset = offset(of: value, gradient: gradient) else { return nil }
        return (offset, graph.shape(of: value).sampleCount)
    }

    /// Plans `graph` for training (activations and their gradients) or inference (activations
    /// only). Values in `keep` (and their gradients) stay live to the end of the step, so that
    /// they can be read after it; everything else may be overwritten.
    public init(graph: Graph, training: Bool, keep: Set<Value> = [], fusions: Fusions = .all) {
        let forwardSteps = graph.nodes.count
        let backward = training ? graph.backwardSteps : []
        let count = graph.shapes.count
        var first = [Int](repeating: Int.max, count: count), last = [Int](repeating: -1, count: count)
        func use(_ v: Value, _ t: Int) {
            first[v.index] = min(first[v.index], t)
            last[v.index] = max(last[v.index], t)
        }
        for (_, v) in graph.inputs { use(v, 0) }
        for (t, node) in graph.nodes.enumerated() {
            for v in node.inputs { use(v, t) }
            use(node.output, t)
        }
        // Forward values that backward steps read.
        var gFirst = [Int](repeating: Int.max, count: count), gLast = [Int](repeating: -1, count: count)
        for (i, step) in backward.enumerated() {
            let t = forwardSteps + i
            let node = graph.nodes[step.node]
            for v in node.savedForBackward { use(v, t) }
            // The step reads its output's gradient and writes its inputs'.
            gFirst[node.output.index] = min(gFirst[node.output.index], t)
            gLast[node.output.index] = max(gLast[node.output.index], t)
            for g in step.inputs {
                let v = node.inputs[g.input]
                gFirst[v.index] = min(gFirst[v.index], t)
                gLast[v.index] = max(gLast[v.index], t)
            }
        }
        let end = forwardSteps + backward.count - 1
        for v in keep {
            last[v.index] = max(last[v.index], end)
            if gLast[v.index] >= 0 { gLast[v.index] = end }
        }
        let graphInputs = Set(graph.inputs.map(\.value))
        placeConcatenations(graph, keep: keep, graphInputs: graphInputs, gradient: gLast)
        // A concatenation's buffer lives while any value placed in it does.
        var grouped: Set<Value> = []
        for (v, view) in views {
            grouped.insert(v)
            grouped.insert(view.root)
            let r = view.root.index
            first[r] = min(first[r], first[v.index])
            last[r] = max(last[r], last[v.index])
            last[v.index] = -1
            sharedFloats += Self.aligned(graph.shapes[v.index].count) * (gLast[v.index] >= 0 ? 2 : 1)
            if gLast[v.index] >= 0 {
                gFirst[r] = min(gFirst[r], gFirst[v.index])
                gLast[r] = max(gLast[r], gLast[v.index])
                gLast[v.index] = -1
            }
        }
        if fusions.contains(.convolutionEpilogue) { planEpilogues(graph, keep: keep, grouped: grouped) }
        if training && fusions.contains(.sharedStatistics) { planSharedStatistics(graph) }
        if training && fusions.contains(.convolutionStatistics) { planConvolutionStatistics(graph) }
        if fusions.contains(.normBackward) {
            planNormConsumers(graph, backward, keep: keep, grouped: grouped)
            for (k, fusion) in normFusions {
                // The norm's step reads the consumer's output gradient (and output, for its
                // ReLU) in place of its own output's gradient, which is never made.
                let t = forwardSteps + backward.firstIndex { $0.node == k }!
                let out = graph.nodes[fusion.consumer].output, v = graph.nodes[k].output
                gLast[out.index] = max(gLast[out.index], t)
                if graph.nodes[fusion.consumer].operation.hasReLU { last[out.index] = max(last[out.index], t) }
                gFirst[v.index] = Int.max
                gLast[v.index] = -1
            }
        }
        for (k, j) in epilogues {
            // The fused node's output is written, and the residual read, at the convolution.
            for v in graph.nodes[j].inputs + [graph.nodes[j].output] { first[v.index] = min(first[v.index], k) }
        }
        // In place: an add or ReLU writes over an input whose last use it is (forward and
        // backward), which is no graph input and not kept; the owner's slot then lives on for the
        // output. Values inside a concatenation keep their own places.
        for (t, node) in graph.nodes.enumerated() where node.operation.flags.contains(.mayRunInPlace) {
            let out = node.output
            if grouped.contains(out) || node.inputs.contains(where: grouped.contains) { continue }
            guard let u = node.inputs.first(where: { u in
                let h = storageOwner(of: u)
                return last[h.index] == t && !graphInputs.contains(h) && !keep.contains(u)
                    && graph.shapes[u.index] == graph.shapes[out.index]
                    && node.inputs.filter({ $0 == u }).count == 1
            }) else { continue }
            let h = storageOwner(of: u)
            inPlace[out] = h
            sharedFloats += Self.aligned(graph.shapes[out.index].count)
            last[h.index] = last[out.index]
            last[out.index] = -1
        }
        for i in 0..<count where last[i] >= 0 {
            slots.append(Slot(value: Value(index: i), isGradient: false, floats: graph.shapes[i].count,
                              first: first[i], last: last[i]))
        }
        for i in 0..<count where gLast[i] >= 0 {
            slots.append(Slot(value: Value(index: i), isGradient: true, floats: graph.shapes[i].count,
                              first: gFirst[i], last: gLast[i]))
        }
        assignOffsets()
    }

    /// Places the inputs of each concat node as channel slices of its output where that is safe:
    /// every input is made by a node (not a graph input), is not kept, feeds no other concat, and
    /// all its other consumers come before the concat. The last condition keeps gradients right
    /// without copies: the backward pass visits the concat (which would write the slices of its
    /// output gradient into its inputs' gradients, as the first writer) before those consumers,
    /// which then add to the same slice.
    private mutating func placeConcatenations(_ graph: Graph, keep: Set<Value>, graphInputs: Set<Value>, gradient gLast: [Int]) {
        var lastConsumer = [Int](repeating: -1, count: graph.shapes.count)
        var concatInputs = [Int](repeating: 0, count: graph.shapes.count)
        for (k, node) in graph.nodes.enumerated() {
            for v in node.inputs {
                if case .concat = node.operation { concatInputs[v.index] += 1 } else { lastConsumer[v.index] = max(lastConsumer[v.index], k) }
            }
        }
        var members: [Value: [Value]] = [:]
        for (k, node) in graph.nodes.enumerated() {
            guard case .concat = node.operation else { continue }
            let placeable = node.inputs.allSatisfy { x in
                !graphInputs.contains(x) && !keep.contains(x) && concatInputs[x.index] == 1 && lastConsumer[x.index] < k
            }
            guard placeable else { continue }
            let y = node.output
            var channel = 0
            for x in node.inputs {
                for m in members.removeValue(forKey: x) ?? [] {
                    let old = views[m]!
                    views[m] = ChannelView(root: y, channel: channel + old.channel, hasGradient: old.hasGradient)
                    members[y, default: []].append(m)
                }
                views[x] = ChannelView(root: y, channel: channel, hasGradient: gLast[x.index] >= 0)
                members[y, default: []].append(x)
                channel += graph.shapes[x.index].c
            }
            freeConcats.insert(k)
        }
    }

    /// A convolution with a bias (a batch-norm-folded one) whose output feeds only the next
    /// node, a ReLU or an addition, gets that node as the epilogue of its bias pass: one pass over
    /// the activation instead of two, which is what makes a folded network faster than its batch
    /// norms. Being the next node, nothing runs between the two, so the addition's other input is
    /// ready and no other value's memory is touched early. The convolution's output then holds
    /// its GEMM without the bias; nothing else reads it (backward passes read a ReLU's and an
    /// addition's outputs, and a convolution's input), so it must not be kept or inside a
    /// concatenation.
    private mutating func planEpilogues(_ graph: Graph, keep: Set<Value>, grouped: Set<Value>) {
        var consumers = [Int](repeating: 0, count: graph.shapes.count)
        for node in graph.nodes { for v in node.inputs { consumers[v.index] += 1 } }
        for (k, node) in graph.nodes.enumerated() where k + 1 < graph.nodes.count {
            guard case .conv(_, bias: true) = node.operation else { continue }
            let v = node.output, next = graph.nodes[k + 1]
            guard consumers[v.index] == 1, next.inputs.contains(v), !keep.contains(v), !grouped.contains(v),
                  !grouped.contains(next.output), next.operation.flags.contains(.fusesIntoConvolution) else { continue }
            epilogues[k] = k + 1
            fusedNodes.insert(k + 1)
        }
    }

    /// A norm whose output only a ReLU or an addition reads gets that node's backward: the norm's
    /// backward masks the node's output gradient itself and writes the addition's other input's
    /// gradient on the way, one pass over the tensor instead of two writes and a read (see
    /// `NormConsumer`). So that writing that gradient at the norm's step instead of the
    /// addition's changes nothing, the addition must be its first writer, and no step between
    /// the two may touch it. Of an addition of two norms (a projection shortcut), the norm whose
    /// step comes first takes it. The norm's output must not be kept, nor inside a
    /// concatenation, since its gradient is never made.
    private mutating func planNormConsumers(_ graph: Graph, _ backward: [BackwardStep], keep: Set<Value>, grouped: Set<Value>) {
        var consumers = [Int](repeating: 0, count: graph.shapes.count)
        for node in graph.nodes { for v in node.inputs { consumers[v.index] += 1 } }
        var stepOf: [Int: Int] = [:]
        for (i, step) in backward.enumerated() { stepOf[step.node] = i }
        for (sj, step) in backward.enumerated() {
            let j = step.node, consumer = graph.nodes[j]
            switch consumer.operation {
            case .relu, .add: break
            default: continue
            }
            guard !grouped.contains(consumer.output) else { continue }
            // The first norm input, in backward order, that qualifies.
            let candidates = step.inputs.compactMap { g -> (Int, Int)? in
                let v = consumer.inputs[g.input]
                guard let k = graph.producers[v.index], let sk = stepOf[k], consumers[v.index] == 1, !keep.contains(v),
                      !grouped.contains(v), !g.accumulate else { return nil }
                switch graph.nodes[k].operation {
                case .batchNorm, .groupNorm: return (sk, g.input)
                default: return nil
                }
            }.sorted { $0.0 < $1.0 }
            guard let (sk, input) = candidates.first else { continue }
            let other = step.inputs.first { $0.input != input }
            if let other {
                // The other input's gradient moves from step sj to sk: it must be fresh there, and
                // nothing between may read it (its producer) or add to it (its other consumers).
                let u = consumer.inputs[other.input]
                guard !other.accumulate, u != consumer.inputs[input] else { continue }
                let between = backward[(sj + 1)..<sk]
                let touches = between.contains { s in
                    s.node == graph.producers[u.index] || s.inputs.contains { graph.nodes[s.node].inputs[$0.input] == u }
                }
                guard !touches else { continue }
            }
            let k = backward[sk].node
            normFusions[k] = NormFusion(consumer: j, shortcutInput: other?.input)
            absorbedBackward.insert(j)
        }
    }

    /// Batch norms whose inputs start at the same channel of the same memory (a value, or the
    /// concatenation buffer it is placed in) read the same values over the channels they have in
    /// common, since nothing writes a value twice: a value inside a concatenation is written
    /// only by its producer, which runs before any norm that reads it, and such values are never
    /// computed over in place. So each training batch norm takes the statistics of its first
    /// channels from the latest earlier one with the most channels, at most its own; in a DenseNet
    /// block it measures only the channels added since the layer before, not the whole buffer.
    private mutating func planSharedStatistics(_ graph: Graph) {
        var earlier: [Value: [(channel: Int, node: Int, channels: Int)]] = [:]
        for (k, node) in graph.nodes.enumerated() {
            guard case .batchNorm = node.operation else { continue }
            let x = node.inputs[0], shape = graph.shape(of: x)
            guard shape.rank == 4 || shape.rank == 2 else { continue }
            let root = views[x]?.root ?? x, channel = views[x]?.channel ?? 0
            let best = earlier[root, default: []].filter { $0.channel == channel && $0.channels <= shape.c }
                .max { ($0.channels, $0.node) < ($1.channels, $1.node) }
            if let best { sharedStatistics[k] = best.node }
            earlier[root, default: []].append((channel, k, shape.c))
        }
    }

    /// A training batch norm that is the next node after the convolution whose output it reads
    /// gets its statistics from that convolution's output kernels, so that the norm reads the
    /// output once, to normalise it, instead of twice. Being the next node, nothing runs between
    /// the two on their queue, so one buffer of partial statistics serves every such pair (the
    /// task schedule orders the pairs on different queues through it). A convolution with a bias
    /// adds it in a later pass, and a norm that shares an earlier norm's statistics has them.
    /// Planes of one pixel (attention units' pooled vectors) are left to the norm: their second
    /// read costs nothing, and parts of one value would only add partial sums to merge.
    private mutating func planConvolutionStatistics(_ graph: Graph) {
        for (k, node) in graph.nodes.enumerated() where k > 0 && sharedStatistics[k] == nil {
            let x = graph.shape(of: node.inputs[0])
            guard case .batchNorm = node.operation, case .conv(_, bias: false) = graph.nodes[k - 1].operation,
                  node.inputs[0] == graph.nodes[k - 1].output, x.rank == 4, x.h * x.w > 1 else { continue }
            convolutionStatistics[k - 1] = k
        }
    }

    private mutating func assignOffsets() {
        let aligned = Self.aligned
        var placed: [Int] = []
        for i in slots.indices.sorted(by: { slots[$0].floats > slots[$1].floats }) {
            let s = slots[i]
            let overlapping = placed.filter { slots[$0].first <= s.last && s.first <= slots[$0].last }
                .map { (slots[$0].offset, slots[$0].offset + aligned(slots[$0].floats)) }
                .sorted { $0.0 < $1.0 }
            var offset = 0
            for (start, end) in overlapping {
                if offset + aligned(s.floats) <= start { break }
                offset = max(offset, end)
            }
            slots[i].offset = offset
            arenaFloats = max(arenaFloats, offset + aligned(s.floats))
            placed.append(i)
        }
    }
}
