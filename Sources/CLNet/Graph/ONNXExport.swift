// An inference graph as an ONNX model (onnx.proto, opsets 13 to 21): every operation of the
// residual family on standard operators, the weights as initializers under their torchvision
// names, `input` [N, C, H, W] with a symbolic batch and `logits` [N, K].

/// Writes inference graphs as ONNX models.
public enum ONNX {
    /// The opsets CLNet writes: 13 is the first whose Slice, Pad, Softmax and Reshape take the
    /// forms used here.
    public static let opsets = 13...21

    /// Protobuf refuses messages over 2 GiB; larger models would need ONNX's external data.
    public static let maximumBytes = Int(Int32.max)

    /// The ONNX bytes of `graph` (an inference graph, as `ModelSpec.graph(..., loss: false)`
    /// builds it) whose output is `logits`, with the parameters' values by name. `metadata`
    /// goes to the model's metadata_props. An operation ONNX cannot express is refused, named.
    public static func model(graph: Graph, logits: Value, parameters: [String: [Float]], opset: Int = 17,
                             metadata: [String: String] = [:], producerVersion: String = CLNet.version) throws(CLNetError) -> [UInt8] {
        guard opsets.contains(opset) else {
            throw .invalidArgument("ONNX opset \(opset) is not written; use one of \(opsets.lowerBound) to \(opsets.upperBound) (default 17)")
        }
        guard graph.inputs.count == 1, graph.shape(of: graph.inputs[0].value).rank == 4 else {
            throw .invalidGraph("ONNX export takes a graph with one NCHW input, not \(graph.inputs.map(\.name))")
        }
        var w = ONNXGraphWriter(graph: graph, logits: logits)
        w.opset = opset
        // DCLS's weights and positions become the built kernel that its convolution reads
        // (`ONNXGraphWriter.add`), which is written instead of them.
        var built: Set<String> = [], total = 0
        for node in graph.nodes {
            guard case let .dcls(op, _) = node.operation else { continue }
            built.formUnion(node.parameters.prefix(2).map { graph.parameters[$0].name })
            total += op.conv.weightShape.count * 4
        }
        for p in graph.parameters {
            let values = try graph.checkedParameter(graph.parameterIndex(p.name)!, in: parameters, for: "ONNX export")
            total += built.contains(p.name) ? 0 : values.count * 4
            guard total < maximumBytes - (1 << 20) else {
                throw .invalidArgument("""
                    the weights pass 2 GiB, protobuf's limit for one ONNX file, and CLNet does not write ONNX's external \
                    data; export a smaller model
                    """)
            }
            if built.contains(p.name) { w.parameterValues[p.name] = values } else { w.initializer(p.name, values, dims: p.shape.dims) }
        }
        for (k, node) in graph.nodes.enumerated() { try w.add(node, index: k) }

        var g = ProtoMessage()
        for n in w.nodes { g.message(1, n) }
        g.string(2, "clnet")
        for t in w.initializers { g.message(5, t) }
        let x = graph.shape(of: graph.inputs[0].value), y = graph.shape(of: logits)
        g.message(11, valueInfo("input", batch: "N", dims: Array(x.dims.dropFirst())))
        g.message(12, valueInfo("logits", batch: "N", dims: Array(y.dims.dropFirst())))

        var m = ProtoMessage()
        // The IR version each opset came with (ONNX's versioning table).
        m.int(1, [13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10][opset]!)
        m.string(2, "CLNet")
        m.string(3, producerVersion)
        m.message(7, g)
        var set = ProtoMessage()
        set.string(1, "")
        set.int(2, opset)
        m.message(8, set)
        for key in metadata.keys.sorted() {
            var entry = ProtoMessage()
            entry.string(1, key)
            entry.string(2, metadata[key]!)
            m.message(14, entry)
        }
        guard m.bytes.count < maximumBytes else {
            throw .invalidArgument("the ONNX model passes 2 GiB, protobuf's limit; export a smaller model")
        }
        return m.bytes
    }

    /// A float32 tensor's type with a symbolic batch dimension.
    static func valueInfo(_ name: String, batch: String, dims: [Int]) -> ProtoMessage {
        var shape = ProtoMessage()
        var first = ProtoMessage()
        first.string(2, batch)
        shape.message(1, first)
        for d in dims {
            var dim = ProtoMessage()
            dim.int(1, d)
            shape.message(1, dim)
        }
        var tensor = ProtoMessage()
        tensor.int(1, 1)  // FLOAT
        tensor.message(2, shape)
        var type = ProtoMessage()
        type.message(1, tensor)
        var info = ProtoMessage()
        info.string(1, name)
        info.message(2, type)
        return info
    }
}

/// The nodes and initializers of one graph, and the names of its values.
struct ONNXGraphWriter {
    let graph: Graph
    let logits: Value
    /// The opset written: operators newer than it are refused, naming the opset they need.
    var opset = 17
    var nodes: [ProtoMessage] = []
    var initializers: [ProtoMessage] = []
    /// The values of the parameters that operators turn into weights of their own (DCLS's
    /// built kernels), by name.
    var parameterValues: [String: [Float]] = [:]

    /// Names ONNX keeps for initializers, which no node output may reuse.
    let parameterNames: Set<String>

    init(graph: Graph, logits: Value) {
        self.graph = graph
        self.logits = logits
        parameterNames = Set(graph.parameters.map(\.name))
    }

    /// A value's ONNX name: `input`, `logits`, or the node that makes it (marked when a
    /// parameter has that name, as Fixup's `bias1` node and parameter do: ONNX names are one
    /// namespace).
    func name(_ v: Value) -> String {
        if v == logits { return "logits" }
        if let p = graph.producers[v.index] {
            let n = graph.nodes[p].name
            return parameterNames.contains(n) ? n + "/output" : n
        }
        return graph.inputs.first { $0.value == v }?.name ?? "value\(v.index)"
    }

    mutating func initializer(_ name: String, _ values: [Float], dims: [Int]) {
        var t = ProtoMessage()
        t.packedInts(1, dims)
        t.int(2, 1)  // FLOAT
        t.string(8, name)
        var raw: [UInt8] = []
        raw.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw += $0 } }
        t.data(9, raw)
        initializers.append(t)
    }

    /// An int64 constant (shapes, axes, pads) as an initializer; returns its name.
    mutating func ints(_ name: String, _ values: [Int]) -> String {
        var t = ProtoMessage()
        t.packedInts(1, [values.count])
        t.int(2, 7)  // INT64
        t.string(8, name)
        var raw: [UInt8] = []
        for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { raw += $0 } }
        t.data(9, raw)
        initializers.append(t)
        return name
    }

    enum Attribute {
        case int(String, Int), float(String, Float), ints(String, [Int]), string(String, String)
    }

    mutating func node(_ op: String, _ inputs: [String], _ output: String, name: String, _ attributes: [Attribute] = []) {
        var n = ProtoMessage()
        for i in inputs { n.string(1, i) }
        n.string(2, output)
        n.string(3, name)
        n.string(4, op)
        for a in attributes {
            var m = ProtoMessage()
            switch a {
            case let .int(key, v):
                m.string(1, key)
                m.int(3, v)
                m.int(20, 2)
            case let .float(key, v):
                m.string(1, key)
                m.float(2, v)
                m.int(20, 1)
            case let .ints(key, v):
                m.string(1, key)
                m.packedInts(8, v)
                m.int(20, 7)
            case let .string(key, v):
                m.string(1, key)
                m.string(4, v)
                m.int(20, 3)
            }
            n.message(5, m)
        }
        nodes.append(n)
    }

    /// The node's own result name, with a Relu after it when `relu`.
    mutating func finish(_ op: String, _ inputs: [String], node: Node, relu: Bool, _ attributes: [Attribute] = []) {
        let out = name(node.output)
        if relu {
            self.node(op, inputs, out + "/pre_relu", name: node.name, attributes)
            self.node("Relu", [out + "/pre_relu"], out, name: node.name + "/relu")
        } else {
            self.node(op, inputs, out, name: node.name, attributes)
        }
    }

    mutating func add(_ node: Node, index: Int) throws(CLNetError) {
        let x = node.inputs.map { name($0) }
        let p = node.parameters.map { graph.parameters[$0].name }
        let out = name(node.output)
        let shape = graph.shape(of: node.inputs[0])
        switch node.operation {
        case let .conv(c, _):
            finish("Conv", x + p, node: node, relu: false, [
                .ints("kernel_shape", [c.kernel.h, c.kernel.w]), .ints("strides", [c.stride.h, c.stride.w]),
                .ints("pads", [c.padding.h, c.padding.w, c.padding.h, c.padding.w]),
                .ints("dilations", [c.dilation.h, c.dilation.w]), .int("group", c.groups),
            ])
        case let .deformConv(op, bias):
            guard opset >= 19 else {
                throw .invalidArgument("ONNX export: \(node.name) is a deformable convolution, which ONNX has from opset 19 (DeformConv); export with opset 19 or later")
            }
            let c = op.conv
            // DeformConv's inputs: X, W, offset, B, mask; an absent bias before a mask is "".
            var inputs = [x[0], p[0], x[1]]
            if bias || op.modulated { inputs.append(bias ? p[1] : "") }
            if op.modulated { inputs.append(x[2]) }
            finish("DeformConv", inputs, node: node, relu: false, [
                .ints("kernel_shape", [c.kernel.h, c.kernel.w]), .ints("strides", [c.stride.h, c.stride.w]),
                .ints("pads", [c.padding.h, c.padding.w, c.padding.h, c.padding.w]),
                .ints("dilations", [c.dilation.h, c.dilation.w]), .int("group", c.groups), .int("offset_group", op.offsetGroups),
            ])
        case let .batchNorm(relu, eps, _):
            finish("BatchNormalization", x + p, node: node, relu: relu, [.float("epsilon", eps)])
        case let .groupNorm(groups, relu, eps):
            // No GroupNormalization before opset 18 (and 18's scales per group): instance
            // normalisation over [N, G, C/G * H * W], then the per-channel affine.
            let base = node.name + "/onnx"
            initializer(base + "_ones", [Float](repeating: 1, count: groups), dims: [groups])
            initializer(base + "_zeros", [Float](repeating: 0, count: groups), dims: [groups])
            self.node("Reshape", [x[0], ints(base + "_grouped_shape", [0, groups, -1])], base + "_grouped", name: base + "_group")
            self.node("InstanceNormalization", [base + "_grouped", base + "_ones", base + "_zeros"], base + "_normed",
                      name: base + "_normalize", [.float("epsilon", eps)])
            self.node("Reshape", [base + "_normed", ints(base + "_shape", [0] + Array(shape.dims.dropFirst()))], base + "_back",
                      name: base + "_ungroup")
            let perChannel = ints(base + "_channel_shape", [-1, 1, 1])
            self.node("Reshape", [p[0], perChannel], base + "_gamma", name: base + "_gamma_shape")
            self.node("Reshape", [p[1], perChannel], base + "_beta", name: base + "_beta_shape")
            self.node("Mul", [base + "_back", base + "_gamma"], base + "_scaled", name: base + "_scale")
            finish("Add", [base + "_scaled", base + "_beta"], node: node, relu: relu)
        case .relu:
            finish("Relu", x, node: node, relu: false)
        case let .add(relu):
            finish("Add", x, node: node, relu: relu)
        case let .maxPool(w):
            finish("MaxPool", x, node: node, relu: false, Self.window(w))
        case let .avgPool(w):
            // PyTorch's default count_include_pad=True, which CLNet's pooling follows.
            finish("AveragePool", x, node: node, relu: false, Self.window(w) + [.int("count_include_pad", 1)])
        case .globalAvgPool:
            // CLNet's global pooling gives [N, C]; ONNX's keeps [N, C, 1, 1].
            self.node("GlobalAveragePool", x, out + "/pooled", name: node.name)
            self.node("Flatten", [out + "/pooled"], out, name: node.name + "/flatten", [.int("axis", 1)])
        case .concat:
            finish("Concat", x, node: node, relu: false, [.int("axis", 1)])
        case let .channelSlice(op):
            let base = node.name + "/onnx"
            finish("Slice", [x[0], ints(base + "_starts", [op.start]), ints(base + "_ends", [op.start + op.count]),
                             ints(base + "_axes", [1])], node: node, relu: false)
        case .linear:
            var input = x[0]
            if shape.rank != 2 {
                self.node("Flatten", [x[0]], out + "/flat", name: node.name + "/flatten", [.int("axis", 1)])
                input = out + "/flat"
            }
            var inputs = [input] + p
            if graph.parameters[node.parameters[0]].shape.rank != 2 {
                // timm's 1x1-convolution layout [out, in, 1, 1]; Gemm takes [out, in].
                inputs[1] = node.name + "/onnx_weight"
                self.node("Reshape", [p[0], ints(node.name + "/onnx_weight_shape", [0, -1])], inputs[1], name: inputs[1])
            }
            finish("Gemm", inputs, node: node, relu: false, [.int("transB", 1)])
        case .dropout, .stochasticDepth:
            // The identity at inference.
            finish("Identity", x, node: node, relu: false)
        case let .padShortcut(op):
            let base = node.name + "/onnx"
            let end = Int(Int64.max)
            self.node("Slice", [x[0], ints(base + "_starts", [0, 0]), ints(base + "_ends", [end, end]),
                                ints(base + "_axes", [2, 3]), ints(base + "_steps", [op.stride, op.stride])],
                      base + "_subsampled", name: base + "_subsample")
            let pad = (op.outChannels - shape.c) / 2
            finish("Pad", [base + "_subsampled", ints(base + "_pads", [0, pad, 0, 0, 0, pad, 0, 0])], node: node, relu: false)
        case .sigmoid:
            finish("Sigmoid", x, node: node, relu: false)
        case .prelu:
            // One slope per channel: ONNX broadcasts from the last axis, so [C] becomes [C, 1, 1].
            var slope = p[0]
            if shape.rank == 4 {
                slope = node.name + "/onnx_slope"
                self.node("Reshape", [p[0], ints(node.name + "/onnx_slope_shape", [-1, 1, 1])], slope, name: slope)
            }
            finish("PRelu", [x[0], slope], node: node, relu: false)
        case .channelScale:
            let s = node.name + "/onnx_scale"
            self.node("Reshape", [x[1], ints(s + "_shape", [0, -1, 1, 1])], s, name: s)
            finish("Mul", [x[0], s], node: node, relu: false)
        case let .selectiveSum(m):
            // softmax over the branches of z [N, M*C], then the weighted sum of the branches.
            let base = node.name + "/onnx"
            self.node("Reshape", [x[m], ints(base + "_branch_shape", [0, m, -1])], base + "_z", name: base + "_split")
            self.node("Softmax", [base + "_z"], base + "_a", name: base + "_softmax", [.int("axis", 1)])
            let axis = ints(base + "_axis", [1]), perChannel = ints(base + "_weight_shape", [0, -1, 1, 1])
            var sum = ""
            for b in 0..<m {
                let a = "\(base)_a\(b)"
                self.node("Slice", [base + "_a", ints(a + "_start", [b]), ints(a + "_end", [b + 1]), axis], a + "_slice",
                          name: a + "_slice")
                self.node("Reshape", [a + "_slice", perChannel], a, name: a + "_shape")
                let term = b == m - 1 && m == 1 ? out : a + "_term"
                self.node("Mul", [x[b], a], term, name: a + "_mul")
                if b == 0 {
                    sum = term
                } else {
                    let next = b == m - 1 ? out : a + "_sum"
                    self.node("Add", [sum, term], next, name: b == m - 1 ? node.name : a + "_add")
                    sum = next
                }
            }
        case let .scalarAffine(hasScale, hasBias):
            var v = x[0]
            if hasScale {
                let scaled = hasBias ? out + "/scaled" : out
                self.node("Mul", [v, p[0]], scaled, name: hasBias ? node.name + "/scale" : node.name)
                v = scaled
            }
            if hasBias { self.node("Add", [v, p[hasScale ? 1 : 0]], out, name: node.name) }
            if !hasScale && !hasBias { self.node("Identity", [v], out, name: node.name) }
        case let .dcls(op, bias):
            // A plain convolution with the built kernel: what DCLS runs at inference.
            let c = op.conv
            let kernel = Reference.dclsKernel(weight: parameterValues[p[0]]!.map(Double.init),
                                              positions: parameterValues[p[1]]!.map(Double.init), op: op).map(Float.init)
            initializer(node.name + ".kernel", kernel, dims: c.weightShape.dims)
            finish("Conv", [x[0], node.name + ".kernel"] + (bias ? [p[2]] : []), node: node, relu: false, [
                .ints("kernel_shape", [c.kernel.h, c.kernel.w]), .ints("strides", [c.stride.h, c.stride.w]),
                .ints("pads", [c.padding.h, c.padding.w, c.padding.h, c.padding.w]),
                .ints("dilations", [c.dilation.h, c.dilation.w]), .int("group", c.groups),
            ])
        case .dendritic:
            // ONNX has no operator with a ReLU inside the product; spelling it out would
            // materialise every output channel's copy of the input.
            throw .invalidArgument("ONNX export: \(node.name) is a dendritic ReLU layer, which ONNX has no operator for; CLNet does not write it as ONNX")
        case .timeRepeat, .timeMean, .sewConnect, .spikingNeuron:
            // A neuron's state runs through the time steps, which ONNX would need as a Loop.
            throw .invalidArgument("ONNX export: \(node.name) is part of a spiking network (\(node.operation.displayName)), which CLNet does not write as ONNX")
        case let .upsample(op):
            // Resize with PyTorch's coordinates: ONNX's half-pixel map clamps at 0 as PyTorch's
            // bilinear does, and nearest is floor(j / scale). A factor is a scale; a size is
            // [N, C] of the input's own shape (the batch is symbolic) and the size.
            let base = node.name + "/onnx"
            var sizes = ""
            var scales = ""
            if let f = op.factor {
                scales = base + "_scales"
                initializer(scales, [1, 1, Float(f.h), Float(f.w)], dims: [4])
            } else {
                self.node("Shape", [x[0]], base + "_shape", name: base + "_shape")
                self.node("Slice", [base + "_shape", ints(base + "_nc_starts", [0]), ints(base + "_nc_ends", [2])],
                          base + "_nc", name: base + "_nc")
                sizes = base + "_sizes"
                self.node("Concat", [base + "_nc", ints(base + "_hw", [op.height, op.width])], sizes, name: sizes, [.int("axis", 0)])
            }
            let attributes: [Attribute] = op.mode == .nearest
                ? [.string("mode", "nearest"), .string("coordinate_transformation_mode", "asymmetric"), .string("nearest_mode", "floor")]
                : [.string("mode", "linear"), .string("coordinate_transformation_mode", "half_pixel")]
            finish("Resize", [x[0], "", scales] + (sizes.isEmpty ? [] : [sizes]), node: node, relu: false, attributes)
        case .multiply:
            finish("Mul", x, node: node, relu: false)
        case .softmaxCrossEntropy, .distillation, .pixelCrossEntropy, .meanSquaredError:
            throw .invalidGraph("""
                ONNX export: \(node.name) is a training loss, which an inference model does not have; export the graph \
                built without its loss
                """)
        }
    }

    static func window(_ w: Pool2D) -> [Attribute] {
        [.ints("kernel_shape", [w.kernel.h, w.kernel.w]), .ints("strides", [w.stride.h, w.stride.w]),
         .ints("pads", [w.padding.h, w.padding.w, w.padding.h, w.padding.w])]
    }
}
