import CLNet
import Foundation
import Testing

/// Transformations for deployment keep what the network computes.
@Suite("Deployment: batch-norm folding")
struct DeploymentTests {
    /// Folding every convolution's batch norm (with running statistics far from 0 and 1) gives
    /// the same eval logits: to 1e-6 in the Double reference (the folded weights are rounded to
    /// Float once), and to 1e-5 on the device.
    @Test(arguments: [
        ("resnet:block=basic,layers=1.1,classes=5", 32),
        ("resnet:block=bottleneck,layers=1.1,groups=4,width=4,stem=cifar,se=4,classes=5", 8),
        ("cifar_resnet:depth=8,channels=1", 8),
        ("densenet:growth=4,blocks=2.2,init=8,bn_size=2,classes=5", 32),
    ])
    func foldingKeepsTheLogits(spec: String, size: Int) throws {
        var rng = freshGenerator("fold \(spec)")
        let (graph, logits) = try ModelSpec.graph(spec, batch: 3, size: size, loss: false)
        let context = try Shared.context()
        let original = try Executor(graph: graph, context: context, training: false, keep: [logits])
        try original.initialize(seed: rng.next())
        var values: [String: [Float]] = [:]
        for p in graph.parameters {
            switch p.role {
            case .normWeight: values[p.name] = randomDoubles(p.shape.count, using: &rng, in: 0.5...1.5).map(Float.init)
            case .normBias, .runningMean: values[p.name] = randomDoubles(p.shape.count, using: &rng, in: -0.5...0.5).map(Float.init)
            case .runningVar: values[p.name] = randomDoubles(p.shape.count, using: &rng, in: 0.5...2).map(Float.init)
            default: values[p.name] = try original.parameter(p.name)
            }
            try original.setParameter(p.name, values[p.name]!)
        }
        let fold = try graph.foldingBatchNorms()
        let foldedValues = try graph.foldBatchNormParameters(fold, values)
        let norms = { (g: Graph) in g.nodes.filter { if case .batchNorm = $0.operation { true } else { false } }.count }
        #expect(norms(fold.graph) == norms(graph) - fold.pairs.count && !fold.pairs.isEmpty)
        if spec.hasPrefix("resnet") || spec.hasPrefix("cifar") { #expect(norms(fold.graph) == 0) }
        // The specification with fold_bn=1 builds the same graph, so `clnet run` takes the file.
        let (specGraph, _) = try ModelSpec.graph(ModelSpec.filling(spec, ["fold_bn": "1"]), batch: 3, size: size, loss: false)
        #expect(specGraph.parameters.map(\.name) == fold.graph.parameters.map(\.name))

        let x = randomDoubles(graph.shape(of: graph.inputs[0].value).count, using: &rng)
        var reference = try ReferenceExecutor(graph: graph, parameters: values.mapValues { $0.map(Double.init) })
        var foldedReference = try ReferenceExecutor(graph: fold.graph, parameters: foldedValues.mapValues { $0.map(Double.init) })
        let want = try reference.forward(["input": x], training: false)[logits.index]
        let got = try foldedReference.forward(["input": x], training: false)[fold.values[logits.index]!.index]
        // Folding rounds the new weights to Float once; the Double reference sees only that.
        #expect(relativeError(got, want) <= 1e-6)

        let folded = try Executor(graph: fold.graph, context: context, training: false, keep: [fold.values[logits.index]!])
        for p in fold.graph.parameters { try folded.setParameter(p.name, foldedValues[p.name]!) }
        try original.forward(["input": x.map(Float.init)])
        try folded.forward(["input": x.map(Float.init)])
        let a = try original.read(logits), b = try folded.read(fold.values[logits.index]!)
        #expect(relativeError(b, a) <= 1e-5, "device: \(relativeError(b, a))")
    }

    /// `clnet export --fold-bn`, then `clnet run` on the original and the folded model: the same
    /// logits, and the folded file has no batch-norm tensor left.
    @Test func exportCommandFoldsAndRunTakesTheResult() throws {
        let dir = try temporaryDirectory("export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let spec = "resnet20:channels=1"
        let (graph, _) = try ModelSpec.graph(spec, batch: 2, size: 16, loss: false)
        let e = try Executor(graph: graph, context: try Shared.context(), training: false)
        try e.initialize(seed: 9)
        var rng = freshGenerator("export")
        for p in graph.parameters where p.role == .runningMean || p.role == .runningVar || p.role == .normBias {
            try e.setParameter(p.name, randomDoubles(p.shape.count, using: &rng, in: 0.2...1).map(Float.init))
        }
        let weights = dir.appendingPathComponent("w.safetensors"), folded = dir.appendingPathComponent("folded.safetensors")
        try e.save(to: weights)
        try SafeTensors.write([("input", .float32(randomDoubles(2 * 256, using: &rng).map(Float.init), shape: [2, 1, 16, 16]))],
                              to: dir.appendingPathComponent("io.safetensors"))
        let export = try runTool("clnet", ["export", "--model", spec, "--weights", weights.path, "--fold-bn", "--output", folded.path])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(String(decoding: export.stdout, as: UTF8.self).contains("--model \(spec),fold_bn=1"))
        let file = try SafeTensors(contentsOf: folded)
        #expect(file.entries.keys.allSatisfy { !$0.contains("bn") } && file.entries["conv1.bias"] != nil)
        for (model, w, out) in [(spec, weights, "a"), ("\(spec),fold_bn=1", folded, "b")] {
            let run = try runTool("clnet", ["run", "--model", model, "--weights", w.path, "--input", "io.safetensors",
                                            "--output", "\(out).safetensors"], in: dir)
            #expect(run.status == 0, "\(run.stderr)")
        }
        let a = try SafeTensors(contentsOf: dir.appendingPathComponent("a.safetensors")).floats("logits")
        let b = try SafeTensors(contentsOf: dir.appendingPathComponent("b.safetensors")).floats("logits")
        #expect(relativeError(b, a) <= 1e-5)
    }
}
