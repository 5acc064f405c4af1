import CLNet
import Testing

@Suite("Models: torchvision's parameter counts and names")
struct ModelTests {
    @Test(arguments: [
        ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160),
        ("resnet152", 60_192_808), ("resnext50_32x4d", 25_028_904), ("resnext101_32x8d", 88_791_336),
        ("wide_resnet50_2", 68_883_240), ("densenet121", 7_978_856), ("densenet169", 14_149_480),
        ("densenet201", 20_013_928),
    ])
    func parameterCountEqualsTorchvision(name: String, count: Int) throws {
        let models: [String: () throws -> Graph] = [
            "resnet18": { try ResNet.resnet18.graph(batch: 1).graph }, "resnet34": { try ResNet.resnet34.graph(batch: 1).graph },
            "resnet50": { try ResNet.resnet50.graph(batch: 1).graph }, "resnet101": { try ResNet.resnet101.graph(batch: 1).graph },
            "resnet152": { try ResNet.resnet152.graph(batch: 1).graph },
            "resnext50_32x4d": { try ResNet.resnext50_32x4d.graph(batch: 1).graph },
            "resnext101_32x8d": { try ResNet.resnext101_32x8d.graph(batch: 1).graph },
            "wide_resnet50_2": { try ResNet.wide_resnet50_2.graph(batch: 1).graph },
            "densenet121": { try DenseNet.densenet121.graph(batch: 1).graph },
            "densenet169": { try DenseNet.densenet169.graph(batch: 1).graph },
            "densenet201": { try DenseNet.densenet201.graph(batch: 1).graph },
        ]
        let graph = try models[name]!()
        #expect(graph.trainableParameterCount == count)
    }

    /// The paper's figures (He et al. 2015, table 6): 0.27 M, 0.46 M, 0.66 M, 0.85 M, 1.7 M, 19.4 M.
    @Test(arguments: [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962), (1202, 19_421_274)])
    func cifarResNetParameterCounts(depth: Int, count: Int) throws {
        let graph = try CIFARResNet(depth: depth).graph(batch: 1).graph
        #expect(graph.trainableParameterCount == count)
        #expect(throws: CLNetError.self) { try CIFARResNet(depth: depth + 1) }
    }

    /// A one-channel ResNet-20 step on the device matches the CPU reference (option-A shortcuts included).
    @Test func cifarResNetStepMatchesReference() throws {
        var rng = freshGenerator("resnet20 step")
        let (graph, logits) = try CIFARResNet(n: 1, inChannels: 1).graph(batch: 2, size: 12)
        var params: [String: [Double]] = [:]
        for p in graph.parameters {
            params[p.name] = p.role == .normWeight || p.role == .runningVar
                ? randomDoubles(p.shape.count, using: &rng, in: 0.5...1.5)
                : randomDoubles(p.shape.count, using: &rng, in: -0.5...0.5)
        }
        let x = randomDoubles(2 * 144, using: &rng), labels = [3, 7]
        var reference = try ReferenceExecutor(graph: graph, parameters: params)
        let values = try reference.forward(["input": x], labels: labels, training: true)
        let grads = try reference.backward(values: values, labels: labels)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true, keep: [logits], queues: 2)
        for (name, v) in params { try executor.setParameter(name, v.map(Float.init)) }
        try executor.forward(["input": x.map(Float.init)], labels: labels)
        try executor.backward()
        #expect(relativeError(try executor.read(logits), values[logits.index]) <= 1e-4)
        for p in graph.parameters where p.trainable {
            #expect(relativeError(try executor.gradient(p.name), grads.parameters[p.name]!) <= 1e-4, "\(p.name)")
        }
    }

    @Test func specificationsBuildTheFamilies() throws {
        // Every name builds, at its own size.
        for name in ModelSpec.names where name != "resnet1202" {
            let g = try ModelSpec.graph(name, batch: 1, size: ModelSpec.defaultSize(name)).graph
            #expect(g.trainableParameterCount > 0, "\(name)")
        }
        // Family specifications, as torchvision's constructors take them.
        let small = try ModelSpec.graph("resnet:block=basic,layers=1.1.1.1,classes=7", batch: 2, size: 32)
        #expect(small.graph.shape(of: small.logits) == [2, 7])
        #expect(small.graph.parameterIndex("layer4.0.downsample.0.weight") != nil)
        let grouped = try ModelSpec.graph("resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=8,classes=3", batch: 1, size: 32)
        #expect(grouped.graph.parameters[grouped.graph.parameterIndex("layer1.0.conv2.weight")!].shape == [32, 8, 3, 3])
        let dense = try ModelSpec.graph("densenet:growth=12,blocks=2.2.2,init=16,bn_size=4,classes=10", batch: 1, size: 32)
        #expect(dense.graph.parameterIndex("features.denseblock3.denselayer2.conv2.weight") != nil)
        #expect(dense.graph.parameterIndex("features.denseblock4.denselayer1.conv1.weight") == nil)
        let gn = try ModelSpec.graph("resnet18:norm=group:32,classes=10", batch: 1, size: 64).graph
        #expect(gn.parameterIndex("bn1.weight") != nil && gn.parameterIndex("bn1.running_mean") == nil)
        let mono = try ModelSpec.graph("resnet20:channels=1", batch: 4, size: 28).graph
        #expect(mono.shape(of: mono.inputs[0].value) == [4, 1, 28, 28])
        // Bad specifications say what is wrong.
        for (spec, text) in [("resnet9000", "unknown model"), ("resnet18:depth=3", "unknown parameter 'depth'"),
                             ("resnet:layers=2.x", "positive integers"), ("resnet18:norm=layer", "norm=layer"),
                             ("densenet:growth=0", "from 1 to 100000"), ("densenet:growth=4611686018427387904", "from 1 to 100000"), ("cifar_resnet:depth=21", "6n + 2"),
                             ("resnet18:classes", "not key=value")] {
            let error = #expect(throws: CLNetError.self) { try ModelSpec.graph(spec, batch: 1) }
            #expect("\(error!)".contains(text), "\(spec): \(error!)")
        }
    }

    @Test func forwardFLOPsMatchTorchvisionsFigures() throws {
        // torchvision's documented GFLOPs (multiply-adds) at 224x224: 1.81, 4.09, 2.83.
        for (name, gmacs) in [("resnet18", 1.81), ("resnet50", 4.09), ("densenet121", 2.83)] {
            let g = try ModelSpec.graph(name, batch: 1, loss: false).graph
            #expect(abs(g.forwardFLOPs / 2e9 - gmacs) < 0.01, "\(name): \(g.forwardFLOPs / 2e9)")
        }
    }

    @Test func torchvisionNames() throws {
        let resnet = try ResNet.resnet50.graph(batch: 1).graph
        for name in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                     "layer2.0.downsample.1.running_var", "layer4.2.bn3.bias", "fc.weight", "fc.bias"] {
            #expect(resnet.parameterIndex(name) != nil, "\(name)")
        }
        let densenet = try DenseNet.densenet121.graph(batch: 1).graph
        for name in ["features.conv0.weight", "features.denseblock1.denselayer1.norm1.running_mean",
                     "features.denseblock4.denselayer16.conv2.weight", "features.transition3.conv.weight",
                     "features.norm5.bias", "classifier.weight", "classifier.bias"] {
            #expect(densenet.parameterIndex(name) != nil, "\(name)")
        }
    }
}

@Suite("Initialisation")
struct InitializationTests {
    @Test func heNormalAndTorchvisionDefaults() throws {
        let (graph, _) = try ModelSpec.graph("resnet:block=basic,layers=1.1.1.1,classes=10", batch: 1, size: 32)
        let context = try Shared.context()
        let a = try Executor(graph: graph, context: context, training: false)
        try a.initialize(seed: 7, zeroInitResidual: true)
        // layer3.0.conv2: 256 x 256 x 3 x 3, std sqrt(2 / (256 * 9)).
        let w = try a.parameter("layer3.0.conv2.weight")
        let mean = w.reduce(0) { $0 + Double($1) } / Double(w.count)
        let std = (w.reduce(0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(w.count)).squareRoot()
        let want = (2.0 / (256 * 9)).squareRoot()
        #expect(abs(std / want - 1) < 0.02 && abs(mean) < want * 0.02, "std \(std) against \(want), mean \(mean)")
        let fc = try a.parameter("fc.weight"), bound = Float(1 / (512.0).squareRoot())
        #expect(fc.allSatisfy { abs($0) <= bound } && fc.contains { abs($0) > bound * 0.9 })
        #expect(try a.parameter("bn1.weight").allSatisfy { $0 == 1 } && a.parameter("bn1.running_var").allSatisfy { $0 == 1 })
        #expect(try a.parameter("layer1.0.bn2.weight").allSatisfy { $0 == 0 }, "the branch's last norm starts at zero")
        #expect(try a.parameter("layer2.0.downsample.1.weight").allSatisfy { $0 == 1 }, "the shortcut's norm does not")
        // The same seed gives the same weights, another seed others.
        let b = try Executor(graph: graph, context: context, training: false)
        try b.initialize(seed: 7, zeroInitResidual: true)
        #expect(try b.parameter("conv1.weight") == a.parameter("conv1.weight"))
        try b.initialize(seed: 8)
        #expect(try b.parameter("conv1.weight") != a.parameter("conv1.weight"))
    }
}
