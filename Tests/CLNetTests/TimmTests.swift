import CLNet
import Foundation
import Testing

/// CLNet's SE and selective-kernel ResNets against the `state_dict` of timm's models of the same
/// names (`Fixtures/timm_models.txt`, listed by `make_pytorch_fixtures.py` from timm 1.0.31): the
/// same tensors, names and shapes both ways, so that timm's weights load strictly into CLNet and
/// CLNet's into `timm.create_model(name).load_state_dict(strict=True)`. The numbers themselves
/// are checked against timm by the `timm_*` PyTorch fixtures.
@Suite("timm's channel-attention ResNets")
struct TimmTests {
    /// Each model's tensors: name, shape, and whether it is a trained parameter.
    static let timm: [String: [String: (shape: [Int], parameter: Bool)]] = {
        let url = PredictTests.fixtures.appendingPathComponent("timm_models.txt")
        var models: [String: [String: (shape: [Int], parameter: Bool)]] = [:]
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 4 else { continue }
            models[f[0], default: [:]][f[1]] = (f[2].split(separator: ",").compactMap { Int($0) }, f[3] == "parameter")
        }
        return models
    }()

    static let names = ["seresnet18", "seresnet34", "seresnet50", "seresnext50_32x4d", "skresnet18", "skresnet34",
                        "skresnet50", "skresnext50_32x4d"]

    @Test(arguments: names)
    func sameTensorsAsTimm(name: String) throws {
        let want = try #require(Self.timm[name], "timm_models.txt lists \(name)")
        let graph = try ModelSpec.graph(name, batch: 1, loss: false).graph
        // What CLNet writes (`Executor.weightTensors`): every parameter and buffer, and each batch
        // norm's `num_batches_tracked`.
        var mine: [String: [Int]] = [:]
        for p in graph.parameters { mine[p.name] = p.shape.dims }
        for node in graph.nodes {
            if case .batchNorm = node.operation { mine["\(node.name).num_batches_tracked"] = [] }
        }
        let missing = Set(want.keys).subtracting(mine.keys).sorted(), unexpected = Set(mine.keys).subtracting(want.keys).sorted()
        #expect(missing.isEmpty, "\(name): timm has, CLNet lacks \(missing.prefix(5))")
        #expect(unexpected.isEmpty, "\(name): CLNet has, timm lacks \(unexpected.prefix(5))")
        for (key, shape) in mine.sorted(by: { $0.key < $1.key }) {
            guard let t = want[key] else { continue }
            #expect(t.shape == shape, "\(name) \(key): timm \(t.shape), CLNet \(shape)")
            if let p = graph.parameters.first(where: { $0.name == key }) {
                #expect(t.parameter == p.trainable, "\(name) \(key): trained in one and not the other")
            }
        }
    }

    /// `clnet models` gives timm's parameter counts at 1000 classes.
    @Test func clnetModelsCountsTimmsParameters() throws {
        let r = try runTool("clnet", ["models"])
        try #require(r.status == 0, "\(r.stderr)")
        for name in Self.names {
            let want = try #require(Self.timm[name]).values.filter(\.parameter).reduce(0) { $0 + $1.shape.reduce(1, *) }
            let line = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").first { $0.split(separator: " ").first.map(String.init) == name }
            let count = line.flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first }.flatMap { Int($0) }
            #expect(count == want, "\(name): clnet models says \(count.map(String.init) ?? "nothing"), timm has \(want)")
        }
        // The paper's SKNet-50 is timm's skresnext50_32x4d.
        let sknet = try ModelSpec.graph("sknet50", batch: 1, loss: false).graph
        let skresnext = try ModelSpec.graph("skresnext50_32x4d", batch: 1, loss: false).graph
        #expect(sknet.parameters == skresnext.parameters)
    }

    /// timm's `make_divisible`, at the widths where its rounding differs from plain division.
    @Test func seAndAttentionWidthsRoundAsTimm() throws {
        let basic = try ModelSpec.graph("seresnet18", batch: 1, loss: false).graph
        // 64 / 16 = 4, which timm rounds up to its divisor, 8.
        #expect(basic.parameters.first { $0.name == "layer1.0.se.fc1.weight" }?.shape == [8, 64, 1, 1])
        let sk = try ModelSpec.graph("skresnet18", batch: 1, loss: false).graph
        // 128 / 8 = 16 (divisor 16); split input: each path sees 32 of block 0's 64 channels.
        #expect(sk.parameters.first { $0.name == "layer2.0.conv1.attn.fc_reduce.weight" }?.shape == [16, 128, 1, 1])
        #expect(sk.parameters.first { $0.name == "layer2.0.conv1.paths.1.conv.weight" }?.shape == [128, 32, 3, 3])
        // A bottleneck 3 channels wide cannot be split between two paths.
        let error = #expect(throws: CLNetError.self) {
            _ = try ModelSpec.graph("resnet:block=bottleneck,layers=1,width=3,sk=8,sk_split=1,stem=cifar", batch: 1, loss: false)
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("even number of channels"), "\(String(describing: error))")
    }
}
