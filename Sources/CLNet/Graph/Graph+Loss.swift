// Changes to a graph's loss: label smoothing, and distillation's loss in place of the
// cross-entropy.

extension Graph {
    /// Sets the label smoothing of the loss node (0 for none, as PyTorch's `label_smoothing`).
    public mutating func setLabelSmoothing(_ smoothing: Float) throws(CLNetError) {
        guard let k = lossNode else { throw .invalidGraph("label smoothing: the graph has no loss node") }
        guard (0..<1).contains(smoothing) else { throw .invalidArgument("label smoothing must be in [0, 1), not \(smoothing)") }
        let n = nodes[k]
        var operation = Operation.softmaxCrossEntropy(labelSmoothing: smoothing)
        if case var .distillation(d) = n.operation {
            d.labelSmoothing = smoothing
            operation = .distillation(d)
        }
        nodes[k] = Node(name: n.name, operation: operation, inputs: n.inputs, output: n.output, parameters: n.parameters)
    }

    /// The training graph with its cross-entropy replaced by knowledge distillation's loss,
    /// which reads a new input `teacher` holding the teacher's logits.
    public func distilling(_ d: Distillation) throws(CLNetError) -> Graph {
        guard let loss = lossNode, case let .softmaxCrossEntropy(smoothing) = nodes[loss].operation else {
            throw .invalidArgument("distillation replaces a graph's cross-entropy loss; this graph has none")
        }
        var d = d
        if smoothing > 0 { d.labelSmoothing = smoothing }
        var b = GraphBuilder()
        var map = [Value?](repeating: nil, count: shapes.count)
        for (name, v) in inputs { map[v.index] = try b.input(name, shape: shape(of: v)) }
        let teacher = try b.input("teacher", shape: shape(of: nodes[loss].inputs[0]))
        for (k, node) in nodes.enumerated() {
            let xs = node.inputs.map { map[$0.index]! }
            map[node.output.index] = k == loss
                ? try b.distillation(xs[0], teacher: teacher, d, name: node.name)
                : try b.replay(node, of: self, inputs: xs)
        }
        return b.graph
    }
}
