import CLNet
import Testing

@Suite("Models beyond classification: the Residual Attention Network, DRRN and DenseASPP")
struct TaskModelTests {
    /// Trainable parameters plus batch norms' running statistics: what the Caffe models these
    /// papers released count (a BatchNorm layer's blobs), and so what their tables give.
    static func caffeCount(_ graph: Graph) -> Int { graph.parameters.reduce(0) { $0 + $1.shape.count } }

    /// Wang et al. 2017, Table 2 (ImageNet): Attention-56 has 31.9 M parameters and 6.3 G
    /// multiply-adds. For Attention-92 the table says 51.3 M and 10.4 G, but the authors' own
    /// Attention-92 deploy file, counted layer by layer, has 52.47 M trainable parameters and this
    /// network the same; the test holds to the released model and says so.
    @Test func attentionNetworksHaveThePapersSize() throws {
        let a56 = try ModelSpec.graph("attention56", batch: 1, loss: false).graph
        #expect((Double(Self.caffeCount(a56)) / 1e5).rounded() / 10 == 31.9, "Attention-56: \(Self.caffeCount(a56))")
        #expect((a56.forwardFLOPs / 2e8).rounded() / 10 == 6.3, "Attention-56: \(a56.forwardFLOPs / 2e9) G multiply-adds")
        let a92 = try ModelSpec.graph("attention92", batch: 1, loss: false).graph
        #expect((Double(a92.trainableParameterCount) / 1e4).rounded() / 100 == 52.47, "Attention-92: \(a92.trainableParameterCount)")
    }

    /// Wang et al. 2017, the CIFAR-10 comparison table: Attention-92 has 1.9 M parameters (m = 2
    /// modules per stage; 36m + 20 layers) and Attention-236 5.1 M (m = 6). The paper gives no
    /// CIFAR layout and released no CIFAR model; this layout gives both as trainable parameters
    /// (1,889,306 and 5,132,826). With the running statistics counted, as Table 2's Caffe
    /// models are above, Attention-236 would be 5.2 M.
    @Test(arguments: [("attention_cifar", 1.9), ("attention_cifar:modules=6.6.6", 5.1)])
    func cifarAttentionNetworksHaveThePapersSize(spec: String, millions: Double) throws {
        let graph = try ModelSpec.graph(spec, batch: 1, loss: false).graph
        let count = graph.trainableParameterCount
        #expect((Double(count) / 1e5).rounded() / 10 == millions, "\(spec): \(count)")
        #expect(graph.shape(of: graph.inputs[0].value) == [1, 3, 32, 32])
    }

    /// Tai et al. 2017, the table of recursive-block and residual-unit counts: DRRN_B1U9 and
    /// DRRN_B1U25 have 297 K parameters, B3U8 1,182 K, B17U1 7,375 K; depth (1 + 2U) B + 1.
    @Test(arguments: [("drrn:b=1,u=9", 297, 20), ("drrn", 297, 52), ("drrn:b=3,u=8", 1182, 52), ("drrn:b=17,u=1", 7375, 52)])
    func drrnHasThePapersSize(spec: String, thousands: Int, depth: Int) throws {
        let graph = try ModelSpec.graph(spec, batch: 1, size: 31).graph
        #expect(Int((Double(graph.trainableParameterCount) / 1000).rounded()) == thousands, "\(spec): \(graph.trainableParameterCount)")
        let convolutions = graph.nodes.filter { if case .conv = $0.operation { true } else { false } }
        #expect(convolutions.count == depth, "\(spec): \(convolutions.count) convolutions along the network")
        // The recursion: every unit's pair of convolutions uses one pair of weights per block.
        #expect(graph.sharesParameters == (spec != "drrn:b=17,u=1"))
        #expect(graph.inputs.map(\.name) == ["input", "target"])
        if case .meanSquaredError = graph.nodes[graph.lossNode!].operation {} else { Issue.record("DRRN trains on the L2 loss") }
    }

    /// DenseASPP's DenseNet-121 configuration as its authors' code builds it (19 Cityscapes
    /// classes): 8.28 M parameters; the logits come back at the input's size.
    @Test func denseASPPHasItsCodesSize() throws {
        let (graph, logits) = try ModelSpec.graph("denseaspp121", batch: 1, size: 64)
        #expect((Double(graph.trainableParameterCount) / 1e4).rounded() / 100 == 8.28, "\(graph.trainableParameterCount)")
        #expect(graph.shape(of: logits) == [1, 19, 64, 64])
        if case .pixelCrossEntropy(255) = graph.nodes[graph.lossNode!].operation {} else { Issue.record("DenseASPP's loss ignores 255") }
        let dilations = Set(graph.nodes.compactMap { if case let .conv(c, _) = $0.operation { c.dilation.h } else { nil } })
        #expect(dilations == [1, 2, 4, 3, 6, 12, 18, 24])
    }

    @Test func specificationsRefuseWhatDoesNotFit() {
        #expect(throws: CLNetError.self) { _ = try ModelSpec.graph("drrn:classes=10", batch: 1) }
        #expect(throws: CLNetError.self) { _ = try ModelSpec.graph("denseaspp:backbone=resnet50", batch: 1) }
        #expect(throws: CLNetError.self) { _ = try ModelSpec.graph("attention:modules=1.1", batch: 1) }
    }
}
