import CLNet
import Testing

@Suite("Graph: building, shape inference, reference execution")
struct GraphTests {
    /// A basic residual block with a projection shortcut, as torchvision names it.
    static func basicBlock(_ b: inout GraphBuilder, _ x: Value, inC: Int, outC: Int, stride: Int, name: String) throws -> Value {
        var y = try b.conv(x, Conv2D(inChannels: inC, outChannels: outC, kernel: 3, stride: stride, padding: 1), name: "\(name).conv1")
        y = try b.batchNorm(y, relu: true, name: "\(name).bn1")
        y = try b.conv(y, Conv2D(inChannels: outC, outChannels: outC, kernel: 3, padding: 1), name: "\(name).conv2")
        y = try b.batchNorm(y, name: "\(name).bn2")
        var shortcut = x
        if stride != 1 || inC != outC {
            shortcut = try b.conv(x, Conv2D(inChannels: inC, outChannels: outC, kernel: 1, stride: stride), name: "\(name).downsample.0")
            shortcut = try b.batchNorm(shortcut, name: "\(name).downsample.1")
        }
        return try b.add(y, shortcut, relu: true, name: "\(name).add")
    }

    @Test func shapesAndTorchvisionNames() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 8, 8])
        let y = try Self.basicBlock(&b, x, inC: 4, outC: 6, stride: 2, name: "layer2.0")
        let pooled = try b.globalAvgPool(y, name: "avgpool")
        let logits = try b.linear(pooled, outFeatures: 10, name: "fc")
        let g = b.graph
        #expect(g.shape(of: y) == [2, 6, 4, 4])
        #expect(g.shape(of: logits) == [2, 10])
        #expect(g.parameterIndex("layer2.0.downsample.0.weight") != nil)
        #expect(g.parameterIndex("layer2.0.bn1.running_var") != nil)
        #expect(g.parameters[g.parameterIndex("fc.weight")!].shape == [10, 6])
        // conv1 4*6*9, bn1 2*6, conv2 6*6*9, bn2 2*6, downsample 4*6 + 2*6, fc 6*10 + 10.
        #expect(g.trainableParameterCount == 216 + 12 + 324 + 12 + 24 + 12 + 70)
    }

    @Test func shapeErrorsThrowAtBuildTimeNamingTheNodes() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 8, 8])
        let a = try b.conv(x, Conv2D(inChannels: 4, outChannels: 6, kernel: 3, padding: 1), name: "branch_a")
        let c = try b.conv(x, Conv2D(inChannels: 4, outChannels: 6, kernel: 3, stride: 2, padding: 1), name: "branch_b")
        let before = (b.graph.nodes.count, b.graph.parameters.count)
        let add = #expect(throws: CLNetError.self) { try b.add(a, c, name: "merge") }
        #expect("\(add!)".contains("merge") && "\(add!)".contains("branch_a") && "\(add!)".contains("branch_b"))
        #expect("\(add!)".contains("[2, 6, 8, 8]") && "\(add!)".contains("[2, 6, 4, 4]"))
        let cat = #expect(throws: CLNetError.self) { try b.concat([a, c], name: "dense") }
        #expect("\(cat!)".contains("dense") && "\(cat!)".contains("branch_b"))
        let conv = #expect(throws: CLNetError.self) {
            try b.conv(a, Conv2D(inChannels: 4, outChannels: 8, kernel: 1), name: "wrong_in")
        }
        #expect("\(conv!)".contains("wrong_in") && "\(conv!)".contains("branch_a") && "\(conv!)".contains("[2, 6, 8, 8]"))
        let dup = #expect(throws: CLNetError.self) {
            try b.conv(a, Conv2D(inChannels: 6, outChannels: 6, kernel: 1), name: "branch_a")
        }
        #expect("\(dup!)".contains("branch_a"))
        #expect((b.graph.nodes.count, b.graph.parameters.count) == before, "a failed build step changed the graph")
    }

    /// The residual add writes over its branch's batch-norm output, which dies there; the
    /// shortcut (used again) and graph inputs are never overwritten.
    @Test func planComputesResidualAddsInPlace() throws {
        var b = GraphBuilder()
        let x = try b.input("x", shape: [2, 4, 6, 6])
        let stem = try b.conv(x, Conv2D(inChannels: 4, outChannels: 4, kernel: 3, padding: 1), name: "stem")
        let y = try Self.basicBlock(&b, stem, inC: 4, outC: 4, stride: 1, name: "layer1.0")
        let p = try b.globalAvgPool(y, name: "pool")
        _ = try b.softmaxCrossEntropy(p, name: "loss")
        let g = b.graph
        let bn2 = g.nodes.first { $0.name == "layer1.0.bn2" }!.output
        for training in [true, false] {
            let plan = MemoryPlan(graph: g, training: training)
            #expect(plan.inPlace[y] == bn2, "training \(training)")
            #expect(plan.offset(of: y) == plan.offset(of: bn2))
            #expect(plan.inPlace.values.contains(x) == false && plan.inPlace.values.contains(stem) == false)
            #expect(plan.peakBytes <= plan.naiveBytes)
        }
    }

    @Test func referenceExecutorComposesTheReferenceOperators() throws {
        var rng = freshGenerator("graph reference forward")
        var b = GraphBuilder()
        let x = try b.input("x", shape: [3, 2, 5, 5])
        let conv = Conv2D(inChannels: 2, outChannels: 3, kernel: 3, padding: 1)
        let c = try b.conv(x, conv, bias: true, name: "conv")
        let n = try b.batchNorm(c, relu: true, name: "bn")
        let p = try b.maxPool(n, Pool2D(kernel: 2), name: "pool")
        let g = b.graph
        var params: [String: [Double]] = [:]
        for q in g.parameters { params[q.name] = randomDoubles(q.shape.count, using: &rng, in: 0.5...1.5) }
        let input = randomDoubles(3 * 2 * 25, using: &rng)
        var exec = try ReferenceExecutor(graph: g, parameters: params)
        let values = try exec.forward(["x": input], training: true)
        let yc = Reference.conv2d(input, shape: [3, 2, 5, 5], weight: params["conv.weight"]!, bias: params["conv.bias"]!, conv: conv)
        let bn = Reference.batchNormTraining(yc, shape: [3, 3, 5, 5], gamma: params["bn.weight"]!, beta: params["bn.bias"]!,
                                             runningMean: params["bn.running_mean"]!, runningVar: params["bn.running_var"]!,
                                             eps: Double(Float(1e-5)), momentum: Double(Float(0.1)), relu: true)
        #expect(values[p.index] == Reference.maxPool(bn.y, shape: [3, 3, 5, 5], window: Pool2D(kernel: 2)).y)
        #expect(exec.parameters["bn.running_mean"] == bn.runningMean, "training updates the running statistics")
        params.removeValue(forKey: "bn.running_var")
        let missing = #expect(throws: CLNetError.self) { try ReferenceExecutor(graph: g, parameters: params) }
        #expect("\(missing!)".contains("bn.running_var"))
    }

    /// The path length by hand: the CIFAR ResNet-8 with PReLUs has a stem PReLU and three blocks,
    /// each a PReLU on the branch (met by half the paths) and one after the addition: 1 + 3 x 1.5.
    /// A PReLU counts its nonlinear channels' fraction; a channel at slope exactly 1 is linear.
    @Test func pathLengthCountsNonlinearChannels() throws {
        let (graph, logits) = try ModelSpec.graph("cifar_resnet:depth=8,act=prelu", batch: 1, loss: false)
        let slopes = graph.parameters.filter { $0.role == .slope }
        func length(_ value: (Int) -> Float) throws -> PathLength {
            try graph.pathLength(to: logits, slopes: Dictionary(uniqueKeysWithValues: slopes.map { p in
                (p.name, (0..<p.shape.count).map(value))
            }))
        }
        let total = slopes.map(\.shape.count).reduce(0, +)
        #expect(try length { _ in 0.25 } == PathLength(average: 5.5, linearChannels: 0, preluChannels: total))
        #expect(try length { _ in 1 } == PathLength(average: 0, linearChannels: total, preluChannels: total))
        // Every other channel linear: each PReLU counts 1/2.
        #expect(try length { $0 % 2 == 0 ? 1 : -0.5 } == PathLength(average: 2.75, linearChannels: total / 2, preluChannels: total))
        // ReLUs fused into norms and additions count 1 each: ResNet-8's stem, and per block one
        // on the branch (half the paths) and one after the addition.
        let (relu, reluLogits) = try ModelSpec.graph("cifar_resnet:depth=8", batch: 1, loss: false)
        #expect(try relu.pathLength(to: reluLogits, slopes: [:]) == PathLength(average: 5.5, linearChannels: 0, preluChannels: 0))
        // A concatenation weighs its inputs by channels: DenseNet's paths are longer than none.
        let (dense, denseLogits) = try ModelSpec.graph("densenet:growth=4,blocks=2.2,init=8,bn_size=0,stem=cifar", batch: 1, loss: false)
        let d = try dense.pathLength(to: denseLogits, slopes: [:]).average
        #expect(d > 1 && d < 6, "\(d)")
        #expect(throws: CLNetError.self) { try graph.pathLength(to: logits, slopes: [:]) }
        // Paths follow the features, not the attention: squeeze-and-excitation and selective
        // kernels leave the length of their network without them.
        func plain(_ spec: String) throws -> Double {
            let (g, l) = try ModelSpec.graph(spec, batch: 1, size: 16, loss: false)
            let s = g.parameters.filter { $0.role == .slope }.map { ($0.name, [Float](repeating: 0.25, count: $0.shape.count)) }
            return try g.pathLength(to: l, slopes: Dictionary(uniqueKeysWithValues: s)).average
        }
        let base = try plain("resnet:block=basic,layers=1.1,width=8,act=prelu,stem=cifar,classes=5")
        #expect(try plain("resnet:block=basic,layers=1.1,width=8,se=4,act=prelu,stem=cifar,classes=5") == base)
        #expect(try plain("resnet:block=bottleneck,layers=1.1,groups=4,width=4,sk=4,stem=cifar,classes=5")
                == plain("resnet:block=bottleneck,layers=1.1,groups=4,width=4,stem=cifar,classes=5"))
    }
}
