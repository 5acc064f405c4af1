// The graph IR that models are built as: values (tensors) produced by nodes (operators), and
// named parameters. Shapes are inferred while the graph is built, so a wrong shape throws there,
// naming the node, and never at run time.

/// A tensor value of a graph: a graph input or a node's output.
public struct Value: Hashable, Sendable, CustomStringConvertible {
    public let index: Int
    public var description: String { "%\(index)" }
}

/// What a parameter is, which decides how it is initialised, whether it is trained and whether
/// the optimizer decays it.
public enum ParameterRole: String, Sendable {
    case weight, bias
    /// Batch-norm scale and shift (trained, usually not decayed).
    case normWeight, normBias
    /// Batch-norm running statistics (buffers, not trained).
    case runningMean, runningVar
    /// PReLU's learnable negative slopes (trained, not decayed, as PyTorch advises).
    case slope
    /// DCLS's kernel positions (trained, never decayed, kept inside `Parameter.bounds`).
    case position
}

/// How a parameter starts, when a model asks for more than its role's default (see
/// `Executor.initialize`).
public enum ParameterInit: Sendable, Equatable {
    /// The role's default: He normal for convolutions (and for fully connected weights in timm's
    /// 1x1-convolution layout, which timm initialises as convolutions), PyTorch's uniform for
    /// other linear layers and biases, 1 and 0 for norms, 0.25 for PReLU slopes.
    case standard
    /// The default multiplied by a factor: He's gain for PReLU, Fixup's depth scaling.
    case scaled(Double)
    /// Every value the same (Fixup's zero-initialised last layers and its scalar multipliers).
    case constant(Double)
}

/// A named parameter or buffer (torchvision's `state_dict` name, e.g. `layer1.0.conv1.weight`).
public struct Parameter: Sendable, Equatable {
    public let name: String
    public let shape: Shape
    public let role: ParameterRole
    /// How `Executor.initialize` sets it.
    public var initialization: ParameterInit = .standard
    /// The optimizer's learning rate for this parameter is the step's times this (Fixup's
    /// scalars learn at a tenth of the rate: each one's gradient sums a whole tensor).
    public var learningRateScale: Float = 1
    /// Where the optimizer clamps the parameter after each step (`SGD.bounds`), and where
    /// initialisation keeps it; nil: nowhere.
    public var bounds: ClosedRange<Float>? = nil
    /// Parameters are trained; running statistics are buffers.
    public var trainable: Bool { role != .runningMean && role != .runningVar }
}

/// An operator of the graph, with everything that fixes its output shape.
public enum Operation: Sendable, Equatable {
    case conv(Conv2D, bias: Bool)
    /// A deformable convolution (see `DeformConv2D`): inputs x, offset, and the mask when
    /// modulated; parameters the weight, then the bias when `bias`.
    case deformConv(DeformConv2D, bias: Bool)
    /// A dendritic ReLU layer (see `DendriticConv2D`): parameters the weight, the dendrites'
    /// biases, then the bias when `bias`.
    case dendritic(DendriticConv2D, bias: Bool)
    /// A convolution with learnable spacings (see `DCLSConv2D`): parameters the weights, the
    /// positions, then the bias when `bias`.
    case dcls(DCLSConv2D, bias: Bool)
    case batchNorm(relu: Bool, eps: Float, momentum: Float)
    case groupNorm(groups: Int, relu: Bool, eps: Float)
    case relu
    case add(relu: Bool)
    case maxPool(Pool2D)
    case avgPool(Pool2D)
    case globalAvgPool
    case concat
    /// Channels `start ..< start + count` of an NCHW input (a selective kernel's split input,
    /// as `torch.split`); the inverse of `concat`.
    case channelSlice(ChannelSlice)
    case linear(outFeatures: Int, bias: Bool)
    case dropout(p: Float)
    /// Stochastic depth (Huang et al. 2016) on a residual branch: in training each sample's
    /// branch is dropped with probability `p`, and kept ones are scaled by 1 / (1 - p), as
    /// torchvision's `StochasticDepth(mode="row")`; at inference it is the identity.
    case stochasticDepth(p: Float)
    /// The CIFAR ResNets' parameter-free shortcut: subsample and zero-pad channels.
    case padShortcut(PadShortcut)
    /// The logistic sigmoid (squeeze-and-excitation gates).
    case sigmoid
    /// PReLU with one learnable slope per channel (He et al. 2015).
    case prelu
    /// Inputs x [N, C, H, W] and s [N, C]: y = x * s per channel (squeeze-and-excitation).
    case channelScale
    /// Selective kernels' fusion (Li et al. 2019): inputs U_1 ... U_M [N, C, H, W] and attention
    /// logits z [N, M*C]; y = sum over m of softmax_m(z[n, m*C + c]) * U_m.
    case selectiveSum(branches: Int)
    /// y = x * scale + bias with one learnable scalar each (Fixup's multipliers and biases);
    /// parameters: the scale (when `scale`), then the bias (when `bias`).
    case scalarAffine(scale: Bool, bias: Bool)
    /// A layer of spiking neurons over inputs [T*N, ...] (see `SpikingNeuron`).
    case spikingNeuron(SpikingNeuron)
    /// x [N, ...] repeated at each of `steps` time steps: [T*N, ...], step t of sample n at t*N + n.
    case timeRepeat(steps: Int)
    /// The mean over `steps` time steps of x [T*N, ...]: [N, ...].
    case timeMean(steps: Int)
    /// SEW ResNet's connection of a block's shortcut (input 0) and branch (input 1) (see
    /// `SEWConnect`).
    case sewConnect(SEWConnect)
    /// Mean softmax cross-entropy of logits [N, K] against labels given at run time; output [1].
    case softmaxCrossEntropy(labelSmoothing: Float)
    /// Knowledge distillation's loss over the student's logits and the teacher's (inputs 0 and
    /// 1, [N, K]) and labels given at run time; output [1].
    case distillation(Distillation)
    /// Nearest or bilinear resampling (see `Upsample`).
    case upsample(Upsample)
    /// The element-wise product of inputs 0 and 1, of one shape.
    case multiply
    /// Mean per-pixel softmax cross-entropy of logits [N, K, H, W] against one label per pixel
    /// given at run time, pixels labelled `ignoreIndex` aside; output [1].
    case pixelCrossEntropy(ignoreIndex: Int)
    /// Mean squared error of input 0 against input 1 (the target, a graph input); output [1].
    case meanSquaredError
}

/// One operator application.
public struct Node: Sendable {
    /// A readable name, unique in its graph (the module path, e.g. `layer1.0.conv1`).
    public let name: String
    public let operation: Operation
    public let inputs: [Value]
    public let output: Value
    /// Indices into `Graph.parameters`, in the order the operator takes them.
    public let parameters: [Int]
}

/// A graph of operators over NCHW Float32 tensors, built with `GraphBuilder`.
public struct Graph: Sendable {
    /// The graph inputs, by name.
    public internal(set) var inputs: [(name: String, value: Value)] = []
    public internal(set) var nodes: [Node] = []
    public internal(set) var parameters: [Parameter] = []
    /// The shape of every value, by index.
    public internal(set) var shapes: [Shape] = []
    /// The node that produced each value, or nil for a graph input.
    public internal(set) var producers: [Int?] = []

    public func shape(of v: Value) -> Shape { shapes[v.index] }

    /// Parameter index by name.
    public func parameterIndex(_ name: String) -> Int? { parameters.firstIndex { $0.name == name } }

    /// Parameter `i`'s values in `values` (by name), checked for size: the one check of the
    /// weights that the reference executor and every graph rewrite take. The error names
    /// `operation`, the parameter and both sizes.
    public func checkedParameter<T>(_ i: Int, in values: [String: [T]], for operation: String) throws(CLNetError) -> [T] {
        let p = parameters[i]
        guard let v = values[p.name] else {
            throw .invalidShape(operation: operation, message: "parameter \(p.name) is missing (shape \(p.shape))")
        }
        guard v.count == p.shape.count else {
            throw .invalidShape(operation: operation,
                                message: "parameter \(p.name) has \(v.count) values but its shape \(p.shape) needs \(p.shape.count)")
        }
        return v
    }

    /// The loss node, if the graph has one.
    public var lossNode: Int? {
        nodes.firstIndex { $0.operation.isLoss }
    }

    /// Which values need a gradient: those computed, directly or not, from a trainable parameter.
    /// Graph inputs and what depends only on them get none (no input gradient for the first layer).
    /// Only values on a path to the loss count: a node whose output never reaches it gets no
    /// backward step.
    public var needsGradient: [Bool] {
        needsGradient(reaching: lossNode.map { nodes[$0].output }, inputGradients: false)
    }

    /// Which values need a gradient for a backward pass that starts at `root`: those on a path
    /// to it that depend on a trainable parameter or, with `inputGradients`, on a graph input.
    public func needsGradient(reaching root: Value?, inputGradients: Bool) -> [Bool] {
        var needs = [Bool](repeating: false, count: shapes.count)
        if inputGradients { for (_, v) in inputs { needs[v.index] = true } }
        for node in nodes {
            let fromParameter = node.parameters.contains { parameters[$0].trainable }
            needs[node.output.index] = fromParameter || node.inputs.contains { needs[$0.index] }
        }
        var reaches = [Bool](repeating: false, count: shapes.count)
        if let root { reaches[root.index] = true }
        for node in nodes.reversed() where reaches[node.output.index] {
            for v in node.inputs { reaches[v.index] = true }
        }
        return zip(needs, reaches).map { $0 && $1 }
    }

    /// The backward pass derived from the forward graph: the nodes in reverse, each with the
    /// inputs it must produce a gradient for and whether that gradient adds to one a later
    /// consumer already wrote (fan-out sums).
    public var backwardSteps: [BackwardStep] {
        backwardSteps(from: lossNode.map { nodes[$0].output }, inputGradients: false)
    }

    /// The backward pass from `root` instead of the loss (an inner unit, for receptive fields),
    /// with, when `inputGradients`, the gradient of every graph input it depends on.
    public func backwardSteps(from root: Value?, inputGradients: Bool) -> [BackwardStep] {
        let needs = needsGradient(reaching: root, inputGradients: inputGradients)
        var written = [Bool](repeating: false, count: shapes.count)
        var steps: [BackwardStep] = []
        for (k, node) in nodes.enumerated().reversed() where needs[node.output.index] {
            var inputs: [BackwardStep.InputGradient] = []
            for (i, v) in node.inputs.enumerated() where needs[v.index] {
                inputs.append(.init(input: i, accumulate: written[v.index]))
                written[v.index] = true
            }
            steps.append(BackwardStep(node: k, inputs: inputs))
        }
        return steps
    }

    /// Multiply-adds times two of one forward pass over the graph's batch: convolutions and
    /// fully connected layers (what "GFLOPs" of a model usually counts).
    public var forwardFLOPs: Double {
        nodes.reduce(0) { $0 + 2 * $1.operation.multiplyAdds(input: shape(of: $1.inputs[0]), output: shape(of: $1.output)) }
    }

    /// Number of trainable parameter values (what torchvision's parameter counts count).
    public var trainableParameterCount: Int {
        parameters.filter(\.trainable).reduce(0) { $0 + $1.shape.count }
    }
}

/// One node's part of the backward pass (see `Graph.backwardSteps`).
public struct BackwardStep: Sendable, Equatable {
    /// An input whose gradient this step writes.
    public struct InputGradient: Sendable, Equatable {
        /// Position in the node's inputs.
        public let input: Int
        /// True when a later consumer of the same value wrote its gradient first.
        public let accumulate: Bool

        public init(input: Int, accumulate: Bool) { (self.input, self.accumulate) = (input, accumulate) }
    }

    public let node: Int
    public let inputs: [InputGradient]
}

/// Builds a `Graph` node by node, inferring shapes; every method throws `CLNetError.invalidShape`
/// naming the node (and the nodes its inputs came from) when shapes do not fit.
public struct GraphBuilder: Sendable {
    public private(set) var graph = Graph()
    private var names: Set<String> = []
    // Lookups that the graph itself answers by a scan: kept here so that building a network of
    // n nodes is O(n), not O(n^2) (a 250-block specification took seconds).
    private var parameterIndices: [String: Int] = [:]
    private var lossNode: Int?

    public init() {}

    /// A graph input of the given shape.
    public mutating func input(_ name: String, shape: Shape) throws(CLNetError) -> Value {
        guard shape.rank >= 1, shape.dims.allSatisfy({ $0 > 0 }) else {
            throw .invalidShape(operation: "input \(name)", message: "shape \(shape) must have positive dimensions")
        }
        try claim(name)
        let v = newValue(shape, producer: nil)
        graph.inputs.append((name, v))
        return v
    }

    /// A convolution with torchvision's parameter names: `<name>.weight` (and `<name>.bias`).
    public mutating func conv(_ x: Value, _ conv: Conv2D, bias: Bool = false, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try conv.outputShape(shape(x)) }
        var params = [("\(name).weight", conv.weightShape, ParameterRole.weight)]
        if bias { params.append(("\(name).bias", [conv.outChannels], .bias)) }
        return try appendNode(name, .conv(conv, bias: bias), [x], out, params)
    }

    /// Batch norm with torchvision's names (`weight`, `bias`, `running_mean`, `running_var`),
    /// optionally fused with the ReLU that follows.
    public mutating func batchNorm(_ x: Value, relu: Bool = false, eps: Float = 1e-5, momentum: Float = 0.1,
                                   name: String) throws(CLNetError) -> Value {
        let s = shape(x)
        // [N, C] too, as PyTorch's BatchNorm1d (selective kernels' attention layer).
        try require(s.rank == 4 || s.rank == 2, name, "batch norm needs an [N, C, H, W] or [N, C] input, got \(s) from \(origin(x))")
        let c = s.c
        let params: [(String, Shape, ParameterRole)] = [
            ("\(name).weight", [c], .normWeight), ("\(name).bias", [c], .normBias),
            ("\(name).running_mean", [c], .runningMean), ("\(name).running_var", [c], .runningVar),
        ]
        return try appendNode(name, .batchNorm(relu: relu, eps: eps, momentum: momentum), [x], s, params)
    }

    public mutating func groupNorm(_ x: Value, groups: Int, relu: Bool = false, eps: Float = 1e-5,
                                   name: String) throws(CLNetError) -> Value {
        let s = shape(x)
        try require(s.rank == 4 && groups > 0 && s.c % groups == 0, name,
                    "\(s.rank == 4 ? s.c : 0) channels of \(s) from \(origin(x)) do not split into \(groups) groups")
        let params: [(String, Shape, ParameterRole)] = [("\(name).weight", [s.c], .normWeight),
                                                        ("\(name).bias", [s.c], .normBias)]
        return try appendNode(name, .groupNorm(groups: groups, relu: relu, eps: eps), [x], s, params)
    }

    public mutating func relu(_ x: Value, name: String) throws(CLNetError) -> Value {
        try appendNode(name, .relu, [x], shape(x), [])
    }

    /// The residual addition, optionally fused with the ReLU after it.
    public mutating func add(_ a: Value, _ b: Value, relu: Bool = false, name: String) throws(CLNetError) -> Value {
        try require(shape(a) == shape(b), name,
                    "cannot add \(shape(a)) from \(origin(a)) and \(shape(b)) from \(origin(b))")
        return try appendNode(name, .add(relu: relu), [a, b], shape(a), [])
    }

    public mutating func maxPool(_ x: Value, _ window: Pool2D, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try window.outputShape("MaxPool", shape(x)) }
        return try appendNode(name, .maxPool(window), [x], out, [])
    }

    public mutating func avgPool(_ x: Value, _ window: Pool2D, name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, [x]) { () throws(CLNetError) in try window.outputShape("AvgPool", shape(x)) }
        return try appendNode(name, .avgPool(window), [x], out, [])
    }

    /// [N, C, H, W] to [N, C].
    public mutating func globalAvgPool(_ x: Value, name: String) throws(CLNetError) -> Value {
        let s = shape(x)
        try require(s.rank == 4, name, "global pooling needs an NCHW input, got \(s) from \(origin(x))")
        return try appendNode(name, .globalAvgPool, [x], [s.n, s.c], [])
    }

    /// Concatenation along channels (DenseNet).
    public mutating func concat(_ xs: [Value], name: String) throws(CLNetError) -> Value {
        let out = try inferring(name, xs) { () throws(CLNetError) in try Concat.outputShape(xs.map { shape($0) }) }
        return try appendNode(name, .concat, xs, out, [])
    }

    /// Channels `channels` of `x` (see `Operation.channelSlice`).
    public mutating func channelSlice(_ x: Value, channels: Range<Int>, name: String) throws(CLNetError) -> Value {
        let op = ChannelSlice(start: channels.lowerBound, count: channels.count)
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        return try appendNode(name, .channelSlice(op), [x], out, [])
    }

    /// A fully connected layer, `<name>.weight` [out, in] and `<name>.bias` [out]. With
    /// `convolutionLayout` the weight is [out, in, 1, 1]: timm's squeeze-and-excitation and
    /// selective-kernel layers are 1x1 convolutions on pooled features, stored so.
    public mutating func linear(_ x: Value, outFeatures: Int, bias: Bool = true, convolutionLayout: Bool = false,
                                name: String) throws(CLNetError) -> Value {
        let s = shape(x)
        try require(outFeatures > 0, name, "needs at least one output feature")
        let weight: Shape = convolutionLayout ? [outFeatures, s.sampleCount, 1, 1] : [outFeatures, s.sampleCount]
        var params = [("\(name).weight", weight, ParameterRole.weight)]
        if bias { params.append(("\(name).bias", [outFeatures], .bias)) }
        return try appendNode(name, .linear(outFeatures: outFeatures, bias: bias), [x], [s.n, outFeatures], params)
    }

    /// The training loss: mean softmax cross-entropy of `logits` [N, K]; the labels are given to
    /// the executor when it runs. A graph has at most one loss.
    public mutating func softmaxCrossEntropy(_ logits: Value, labelSmoothing: Float = 0, name: String) throws(CLNetError) -> Value {
        let s = shape(logits)
        try require(s.rank == 2, name, "logits must be [N, K], got \(s) from \(origin(logits))")
        try require(labelSmoothing >= 0 && labelSmoothing < 1, name, "label smoothing \(labelSmoothing) must be in [0, 1)")
        try requireNoLoss(name)
        return try appendNode(name, .softmaxCrossEntropy(labelSmoothing: labelSmoothing), [logits], [1], [])
    }

    /// The distillation loss of the student's `logits` against the `teacher`'s (see
    /// `Distillation`); the labels are given to the executor when it runs.
    public mutating func distillation(_ logits: Value, teacher: Value, _ d: Distillation, name: String) throws(CLNetError) -> Value {
        let s = shape(logits)
        try require(s.rank == 2 && shape(teacher) == s, name, "logits \(s) from \(origin(logits)) and teacher \(shape(teacher)) from \(origin(teacher)) must both be [N, K]")
        do { try d.check("node \(name)") } catch { throw error }
        try requireNoLoss(name)
        return try appendNode(name, .distillation(d), [logits, teacher], [1], [])
    }

    /// The option-A shortcut of the CIFAR ResNets: subsample by `stride`, zero-pad to `outChannels`.
    public mutating func padShortcut(_ x: Value, outChannels: Int, stride: Int, name: String) throws(CLNetError) -> Value {
        let op = PadShortcut(outChannels: outChannels, stride: stride)
        let out = try inferring(name, [x]) { () throws(CLNetError) in try op.outputShape(shape(x)) }
        return try appendNode(name, .padShortcut(op), [x], out, [])
    }

    /// Stochastic depth on a residual branch `x` (see `Operation.stochasticDepth`).
    public mutating func stochasticDepth(_ x: Value, p: Float, name: String) throws(CLNetError) -> Value {
        try require(p >= 0 && p < 1, name, "stochastic depth probability \(p) must be in [0, 1)")
        try require(shape(x).rank == 4, name, "stochastic depth needs an [N, C, H, W] branch, got \(shape(x))")
        return try appendNode(name, .stochasticDepth(p: p), [x], shape(x), [])
    }

    /// The logistic sigmoid.
    public mutating func sigmoid(_ x: Value, name: String) throws(CLNetError) -> Value {
        try appendNode(name, .sigmoid, [x], shape(x), [])
    }

    /// PReLU with one slope per channel, `<name>.weight` [C] (PyTorch's `nn.PReLU(C)`), starting at 0.25.
    public mutating func prelu(_ x: Value, name: String) throws(CLNetError) -> Value {
        let s = shape(x)
        try require(s.rank >= 2, name, "PReLU needs an [N, C, ...] input, got \(s) from \(origin(x))")
        return try appendNode(name, .prelu, [x], s, [("\(name).weight", [s.c], .slope)])
    }

    /// x [N, C, H, W] scaled per sample and channel by s ([N, C] or [N, C, 1, 1]).
    public mutating func channelScale(_ x: Value, by s: Value, name: String) throws(CLNetError) -> Value {
        let xs = shape(x), ss = shape(s)
        try require(xs.rank == 4 && ss.count == xs.n * xs.c && ss.n == xs.n && ss.c == xs.c, name,
                    "cannot scale \(xs) from \(origin(x)) by \(ss) from \(origin(s)); the scale must be [\(xs.n), \(xs.rank > 1 ? xs.c : 0)]")
        return try appendNode(name, .channelScale, [x, s], xs, [])
    }

    /// Selective kernels' attention-weighted sum of `branches` (see `Operation.selectiveSum`),
    /// with attention logits `z` [N, M*C].
    public mutating func selectiveSum(_ branches: [Value], logits z: Value, name: String) throws(CLNetError) -> Value {
        try require((2...4).contains(branches.count), name, "takes 2 to 4 branches, got \(branches.count)")
        let u = shape(branches[0])
        for b in branches.dropFirst() {
            try require(shape(b) == u, name, "branches differ: \(u) from \(origin(branches[0])) and \(shape(b)) from \(origin(b))")
        }
        let zs = shape(z)
        try require(u.rank == 4 && zs.n == u.n && zs.count == u.n * branches.count * u.c, name,
                    "attention logits \(zs) from \(origin(z)) must be [\(u.n), \(branches.count) x \(u.rank > 1 ? u.c : 0)] for branches \(u)")
        return try appendNode(name, .selectiveSum(branches: branches.count), branches + [z], u, [])
    }

    /// y = x * scale + bias with learnable scalars named `scale` and `bias` (either may be nil),
    /// Fixup's multiplier (starting at 1) and bias (starting at 0).
    public mutating func scalarAffine(_ x: Value, scale: String?, bias: String?, name: String) throws(CLNetError) -> Value {
        try require(scale != nil || bias != nil, name, "needs a scale, a bias or both")
        var params: [(String, Shape, ParameterRole, ParameterInit)] = []
        if let scale { params.append((scale, [1], .normWeight, .constant(1))) }
        if let bias { params.append((bias, [1], .normBias, .constant(0))) }
        let y = try appendNode(name, .scalarAffine(scale: scale != nil, bias: bias != nil), [x], shape(x), initialized: params)
        for i in graph.nodes.last!.parameters { graph.parameters[i].learningRateScale = 0.1 }
        return y
    }

    /// Adds a copy of `node` (of `graph`) reading `inputs` of this graph: the same operation,
    /// name and parameters. Graph transformations rebuild graphs with it.
    public mutating func replay(_ node: Node, of graph: Graph, inputs: [Value]) throws(CLNetError) -> Value {
        guard inputs.count == node.inputs.count,
              zip(inputs, node.inputs).allSatisfy({ shape($0) == graph.shape(of: $1) }) else {
            throw .invalidShape(operation: "node \(node.name)", message: "replayed with inputs \(inputs.map { shape($0) }) instead of \(node.inputs.map { graph.shape(of: $0) })")
        }
        let params = node.parameters.map { i in
            (graph.parameters[i].name, graph.parameters[i].shape, graph.parameters[i].role, graph.parameters[i].initialization)
        }
        // A parameter already added is one the graph shares between nodes: it stays one.
        let y = try appendNode(node.name, node.operation, inputs, graph.shape(of: node.output), initialized: params, sharing: true)
        for (mine, theirs) in zip(self.graph.nodes.last!.parameters, node.parameters) {
            self.graph.parameters[mine].learningRateScale = graph.parameters[theirs].learningRateScale
            self.graph.parameters[mine].bounds = graph.parameters[theirs].bounds
        }
        return y
    }

    /// Sets how parameter `name` is initialised (see `ParameterInit`).
    public mutating func setInitialization(_ name: String, _ initialization: ParameterInit) throws(CLNetError) {
        guard let i = parameterIndices[name] else {
            throw .invalidArgument("no parameter \(name) to initialise")
        }
        graph.parameters[i].initialization = initialization
    }

    /// Sets the factor on the learning rate of parameter `name` (see `Parameter.learningRateScale`).
    public mutating func setLearningRateScale(_ name: String, _ scale: Float) throws(CLNetError) {
        guard let i = parameterIndices[name] else {
            throw .invalidArgument("no parameter \(name) to set the learning rate of")
        }
        graph.parameters[i].learningRateScale = scale
    }

    /// Keeps parameter `name` inside `bounds` (see `Parameter.bounds`).
    public mutating func setBounds(_ name: String, _ bounds: ClosedRange<Float>) throws(CLNetError) {
        guard let i = parameterIndices[name] else { throw .invalidArgument("no parameter \(name) to bound") }
        graph.parameters[i].bounds = bounds
    }

    public mutating func dropout(_ x: Value, p: Float, name: String) throws(CLNetError) -> Value {
        try require(p >= 0 && p < 1, name, "dropout probability \(p) must be in [0, 1)")
        return try appendNode(name, .dropout(p: p), [x], shape(x), [])
    }

    // MARK: - Internals (for the builders here and in the operators' own files, e.g. Ops/Spiking.swift)

    /// A value's shape; [0] for a value of another graph, which every method then rejects.
    func shape(_ v: Value) -> Shape { v.index >= 0 && v.index < graph.shapes.count ? graph.shapes[v.index] : [0] }

    /// "input x" or "node layer1.0.conv1": where a value came from, for messages.
    func origin(_ v: Value) -> String {
        if let p = graph.producers[v.index] { return "node \(graph.nodes[p].name)" }
        return "input \(graph.inputs.first { $0.value == v }?.name ?? "\(v)")"
    }

    func require(_ condition: Bool, _ name: String, _ message: @autoclosure () -> String) throws(CLNetError) {
        if !condition { throw .invalidShape(operation: "node \(name)", message: message()) }
    }

    /// A graph has at most one loss.
    func requireNoLoss(_ name: String) throws(CLNetError) {
        try require(lossNode == nil, name, "the graph already has a loss, node \(lossNode.map { graph.nodes[$0].name } ?? "")")
    }

    /// Runs an operator's own shape check, re-labelled with the node and its inputs' origins.
    func inferring(_ name: String, _ inputs: [Value], _ infer: () throws(CLNetError) -> Shape) throws(CLNetError) -> Shape {
        for v in inputs where v.index >= graph.shapes.count {
            throw .invalidShape(operation: "node \(name)", message: "input \(v) does not belong to this graph")
        }
        do {
            return try infer()
        } catch {
            let from = inputs.map { "\(shape($0)) from \(origin($0))" }.joined(separator: ", ")
            throw .invalidShape(operation: "node \(name)", message: "\(error) (inputs: \(from))")
        }
    }

    private mutating func claim(_ name: String) throws(CLNetError) {
        guard !name.isEmpty, names.insert(name).inserted else {
            throw .invalidShape(operation: "node \(name)", message: "names must be unique and non-empty in a graph")
        }
    }

    private mutating func newValue(_ shape: Shape, producer: Int?) -> Value {
        graph.shapes.append(shape)
        graph.producers.append(producer)
        return Value(index: graph.shapes.count - 1)
    }

    /// Adds the node and its parameters, after every check, so that a throw leaves the graph as it was.
    mutating func appendNode(_ name: String, _ op: Operation, _ inputs: [Value], _ out: Shape,
                                     _ params: [(String, Shape, ParameterRole)]) throws(CLNetError) -> Value {
        try appendNode(name, op, inputs, out, initialized: params.map { ($0.0, $0.1, $0.2, ParameterInit.standard) })
    }

    /// With `sharing`, a parameter of the same name, shape and role as one already added is that
    /// one (weight sharing, see `reapply`); without, it is an error.
    mutating func appendNode(_ name: String, _ op: Operation, _ inputs: [Value], _ out: Shape,
                             initialized params: [(String, Shape, ParameterRole, ParameterInit)],
                             sharing: Bool = false) throws(CLNetError) -> Value {
        for v in inputs where v.index >= graph.shapes.count {
            throw .invalidShape(operation: "node \(name)", message: "input \(v) does not belong to this graph")
        }
        var newNames: Set<String> = []
        for (p, shape, role, _) in params {
            if let i = parameterIndices[p], sharing, graph.parameters[i].shape == shape, graph.parameters[i].role == role { continue }
            if parameterIndices[p] != nil || !newNames.insert(p).inserted {
                throw .invalidShape(operation: "node \(name)", message: "parameter \(p) is already defined")
            }
        }
        // The loss is where the backward pass starts (its gradient is 1); a node reading it would
        // need a gradient flowing into the loss, which the backward pass does not provide.
        if let loss = lossNode, inputs.contains(graph.nodes[loss].output) {
            throw .invalidShape(operation: "node \(name)", message: "reads the loss \(graph.nodes[loss].name); the loss must be the graph's last value")
        }
        try claim(name)
        var indices: [Int] = []
        for (p, shape, role, initialization) in params {
            if let i = parameterIndices[p] {
                indices.append(i)
                continue
            }
            graph.parameters.append(Parameter(name: p, shape: shape, role: role, initialization: initialization))
            indices.append(graph.parameters.count - 1)
            parameterIndices[p] = graph.parameters.count - 1
        }
        if op.isLoss { lossNode = graph.nodes.count }
        let v = newValue(out, producer: graph.nodes.count)
        graph.nodes.append(Node(name: name, operation: op, inputs: inputs, output: v, parameters: indices))
        return v
    }
}
