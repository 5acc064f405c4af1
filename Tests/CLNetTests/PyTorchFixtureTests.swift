import CLNet
import Foundation
import Testing

/// `clnet run` against PyTorch: torchvision's own ResNet, ResNeXt and DenseNet classes, timm's
/// SE and selective-kernel ResNets, and the pre-activation ResNet of the paper's code
/// (fb.resnet.torch `preresnet.lua`, written out as an `nn.Module` in the script), run in float64 by `Fixtures/make_pytorch_fixtures.py`. The weights
/// are not in the files but made by the same formula here and there (`fixtureValues`), to keep the
/// fixtures small.
@Suite("PyTorch fixtures")
struct PyTorchFixtureTests {
    /// The fixture, the CLNet specification of the torchvision constructor that made it, and the
    /// convolution algorithm forced on every layer it applies to (`CLNET_CONV_ALGO`; nil: the
    /// measured choice), so that each path is checked against PyTorch over a whole network.
    @Test(arguments: [
        ("resnet", "resnet:block=basic,layers=1.1.1.1,classes=10", "im2col+gemm"),
        ("resnet", "resnet:block=basic,layers=1.1.1.1,classes=10", "winograd-2x2"),
        ("resnet", "resnet:block=basic,layers=1.1.1.1,classes=10", "winograd-4x4"),
        ("resnet", "resnet:block=basic,layers=1.1.1.1,classes=10", "implicit-gemm"),
        ("resnext", "resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=4,classes=10", "direct"),
        ("resnext", "resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=4,classes=10", "grouped-blocked"),
        ("resnext", "resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=4,classes=10", "im2col+gemm"),
        ("resnext", "resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=4,classes=10", "implicit-gemm"),
        ("densenet", "densenet:growth=8,blocks=2.3,init=16,bn_size=2,classes=10", "winograd-2x2"),
    ])
    func everyAlgorithmMatchesPyTorch(fixture: String, spec: String, algorithm: String) throws {
        try check(fixture: fixture, spec: spec, environment: ["CLNET_CONV_ALGO": algorithm])
    }

    /// The fixture, and the CLNet specification of the torchvision constructor that made it.
    @Test(arguments: [
        // ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
        ("resnet", "resnet:block=basic,layers=1.1.1.1,classes=10"),
        // ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4, num_classes=10)
        ("resnext", "resnet:block=bottleneck,layers=1.1.1.1,groups=4,width=4,classes=10"),
        // DenseNet(growth_rate=8, block_config=(2, 3), num_init_features=16, bn_size=2, num_classes=10)
        ("densenet", "densenet:growth=8,blocks=2.3,init=16,bn_size=2,classes=10"),
        // PreActResNet(False, [2, 2, 2, 2], num_classes=10), 64x64
        ("preact_resnet18", "preact_resnet18:classes=10"),
        // PreActResNet(True, [1, 1, 1, 1], num_classes=10, width=16), 64x64: with [3, 4, 6, 3]
        // blocks float32 itself misses 1e-3 on almost every input (the script's `float32_error`)
        ("preact_resnet50", "preact_resnet50:layers=1.1.1.1,width=16,classes=10"),
        // timm's ResNet class with one block per stage, 10 classes: BasicBlock with SE (seresnet18),
        ("timm_seresnet", "seresnet18:layers=1.1.1.1,classes=10"),
        // Bottleneck with SE, cardinality 4, base width 4 (seresnext50_32x4d),
        ("timm_seresnext", "seresnext50_32x4d:layers=1.1.1.1,groups=4,width=4,classes=10"),
        // SelectiveKernelBasic, split input, rd_ratio 1/8, rd_divisor 16 (skresnet18), batch 4,
        ("timm_skresnet", "skresnet18:layers=1.1.1.1,classes=10"),
        // SelectiveKernelBottleneck, split input (skresnet50), batch 4,
        ("timm_skresnet50", "skresnet50:layers=1.1.1.1,classes=10"),
        // SelectiveKernelBottleneck, cardinality 4, base width 4, rd_divisor 32 (skresnext50_32x4d), batch 4
        ("timm_skresnext", "skresnext50_32x4d:layers=1.1.1.1,groups=4,width=4,classes=10"),
        // SpikingJelly's SEWResNet(BasicBlock, [1, 1, 1, 1], cnf=ADD or IAND) with IF neurons, the
        // arctangent surrogate and the reset detached, over 4 time steps
        ("sew_resnet", "sew_resnet18:layers=1.1.1.1,T=4,connect=add,classes=10"),
        ("sew_resnet_iand", "sew_resnet18:layers=1.1.1.1,T=4,connect=iand,classes=10"),
    ])
    func clnetRunMatchesPyTorch(fixture: String, spec: String) throws {
        try check(fixture: fixture, spec: spec, environment: [:])
    }

    private func check(fixture: String, spec: String, environment: [String: String]) throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/pytorch_\(fixture).safetensors")
        let want = try SafeTensors(contentsOf: url)
        let input = try #require(want.entries["input"])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-fixture-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        // The weights, from the formula the fixture script used.
        let (graph, _) = try ModelSpec.graph(spec, batch: input.shape[0], size: input.shape[2])
        let weights = dir.appendingPathComponent("w.safetensors"), io = dir.appendingPathComponent("io.safetensors")
        try SafeTensors.write(graph.parameters.map { p in
            (p.name, .float32(fixtureValues(p.name, count: p.shape.count, role: p.role, fanIn: p.shape.sampleCount),
                              shape: p.shape.dims))
        }, to: weights)
        try SafeTensors.write([("input", .float32(try want.floats("input"), shape: input.shape)),
                               ("labels", .int64(try want.integers("labels"), shape: [input.shape[0]]))], to: io)
        // The script draws again from "input.1", "input.2", ... while an input sits within float32's
        // reach of a ReLU kink, where one flipped unit moves a gradient by more than the bound.
        let inputName = want.metadata["input"] ?? "input"
        #expect(try want.floats("input") == fixtureValues(inputName, count: input.count, role: nil, fanIn: 1),
                "the Swift formula makes the fixture's own input")

        var worst = (0.0, "")
        func check(_ name: String, _ got: [Float], _ expected: [Float], bound: Double) {
            let error = relativeError(got, expected.map(Double.init))
            #expect(error <= bound, "\(fixture) \(environment) \(name): relative error \(error) against PyTorch")
            if name.hasPrefix("grad") && error > worst.0 { worst = (error, name) }
        }
        for mode in ["eval", "train"] {
            let out = dir.appendingPathComponent("\(mode).safetensors")
            var arguments = ["run", "--model", spec, "--weights", weights.path, "--input", io.path, "--output", out.path,
                             "--mode", mode]
            if mode == "train" { arguments.append("--grads") }
            let r = try runTool("clnet", arguments, environment: environment)
            try #require(r.status == 0, "\(r.stderr)")
            let got = try SafeTensors(contentsOf: out)
            check("\(mode).logits", try got.floats("logits"), try want.floats("\(mode).logits"), bound: 1e-4)
            guard mode == "train" else { continue }
            check("loss", try got.floats("loss"), try want.floats("train.loss"), bound: 1e-4)
            for name in want.entries.keys.sorted() where name.hasPrefix("state.") {
                check(name, try got.floats(name), try want.floats(name), bound: 1e-4)
            }
            for p in graph.parameters where p.trainable {
                let all = try got.floats("grad.\(p.name)")
                let expected = try want.floats("grad.\(p.name)")
                if want.entries["grad_index.\(p.name)"] != nil {
                    // A large tensor: 512 sampled values, and the norm of all of them.
                    let index = try want.integers("grad_index.\(p.name)")
                    check("grad.\(p.name) (sampled)", index.map { all[Int($0)] }, expected, bound: 1e-3)
                    let norm = all.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
                    let wantNorm = Double(try want.floats("grad_norm.\(p.name)")[0])
                    check("grad.\(p.name) (norm)", [Float(norm)], [Float(wantNorm)], bound: 1e-3)
                } else {
                    check("grad.\(p.name)", all, expected, bound: 1e-3)
                }
            }
        }
        print("\(fixture): worst gradient error against PyTorch float64 \(worst)")
    }
}

/// FNV-1a of a name: the seed of its values.
func fnv1a(_ text: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

/// The fixture script's `fixture_values`, bit for bit: SplitMix64 uniforms seeded by the name's
/// FNV-1a, scaled by role (He-variance uniform for weights, near 1 for norm weights and variances).
func fixtureValues(_ name: String, count: Int, role: ParameterRole?, fanIn: Int) -> [Float] {
    var rng = SeededGenerator(seed: fnv1a(name))
    return (0..<count).map { _ in
        let u = rng.uniform()
        let v: Double = switch role {
        case .weight?: (2 * u - 1) * (6.0 / Double(fanIn)).squareRoot()
        case .bias?, .normBias?, .runningMean?: (2 * u - 1) * 0.2
        case .normWeight?, .runningVar?: 0.5 + u
        // No fixture model has PReLU; a slope would start near PyTorch's 0.25.
        case .slope?: 0.25 * (0.5 + u)
        // DCLS's positions spread over a 5x5 footprint.
        case .position?: (2 * u - 1) * 2
        case nil: 2 * u - 1
        }
        return Float(v)
    }
}
