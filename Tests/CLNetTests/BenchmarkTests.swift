import CLNet
import CLNetCLI
import Foundation
import Testing

/// The arithmetic behind `clnet-bench model`: statistics, rates and fractions, the roofline
/// bound, the cost model, the attribution of device time to layers, and the JSON it shares with
/// the PyTorch baseline. Nothing here checks a timing.
@Suite("Benchmark arithmetic")
struct BenchmarkTests {
    @Test func timingStatistics() {
        let odd = Timing([5, 1, 4, 2, 3])
        #expect(odd.median == 3 && odd.p10 == 1 && odd.p90 == 5 && odd.samples == 5)
        let even = Timing([4, 1, 3, 2])
        #expect(even.median == 2.5)
        // Nearest rank over 11 samples: p10 is the second smallest, p90 the second largest.
        let eleven = Timing((0...10).map(Double.init).shuffled())
        #expect(eleven.p10 == 1 && eleven.median == 5 && eleven.p90 == 9)
        let ms = Timing([0.001, 0.003, 0.002]).scaled(by: 1e3)
        #expect(abs(ms.median - 2) < 1e-12 && abs(ms.p10 - 1) < 1e-12 && abs(ms.p90 - 3) < 1e-12 && ms.samples == 3)
    }

    @Test func rooflineAndFractions() {
        let peak = DevicePeak(gemmGFLOPS: 100, copyGBPS: 20)
        #expect(peak.ridge == 5)
        // 2 GFLOP over 0.1 GB: intensity 20, above the ridge.
        let gemmLike = WorkCost(flops: 2e9, bytes: 1e8)
        #expect(peak.bound(gemmLike) == .compute)
        #expect(abs(peak.rooflineSeconds(gemmLike) - 0.02) < 1e-15)
        let r = WorkReport(name: "conv", operation: "conv im2col+gemm", seconds: 0.04, stepSeconds: 0.16, cost: gemmLike, peak: peak)
        #expect(abs(r.milliseconds - 40) < 1e-9)
        #expect(abs(r.share - 0.25) < 1e-12)
        #expect(abs(r.gflops - 50) < 1e-9 && abs(r.gemmFraction - 0.5) < 1e-12)
        #expect(abs(r.gbPerSecond - 2.5) < 1e-9 && abs(r.copyFraction - 0.125) < 1e-12)
        #expect(abs(r.rooflineFraction - 0.5) < 1e-12)
        // 1 flop per 4 bytes: memory bound; the roofline time is the copy time.
        let normLike = WorkCost(flops: 1e8, bytes: 4e8)
        #expect(peak.bound(normLike) == .memory)
        let n = WorkReport(name: "bn", operation: "batch norm", seconds: 0.08, stepSeconds: 0.16, cost: normLike, peak: peak)
        #expect(abs(n.rooflineFraction - 0.25) < 1e-12 && abs(n.copyFraction - 0.25) < 1e-12)
        // Work that took no recorded time has no rates, rather than infinite ones.
        let free = WorkReport(name: "cat", operation: "concat", seconds: 0, stepSeconds: 0.16, cost: normLike, peak: peak)
        #expect(free.gflops == 0 && free.gbPerSecond == 0 && free.rooflineFraction == 0)

        let kinds = WorkReport.byOperation([(r, 0.05, gemmLike), (n, 0.08, normLike), (r, 0.05, gemmLike)],
                                           stepSeconds: 0.16, peak: peak)
        #expect(kinds.map(\.operation) == ["conv im2col+gemm", "batch norm"])
        #expect(kinds[0].name == "2 layers" && abs(kinds[0].share - 0.625) < 1e-12 && abs(kinds[0].gflops - 40) < 1e-9)
        #expect(kinds[1].name == "1 layer" && abs(kinds[1].share - 0.5) < 1e-12)
    }

    @Test func costModel() throws {
        // One 3x3 convolution, 4 -> 8 channels, stride 2 on 2 x 4 x 9 x 9: output 2 x 8 x 5 x 5.
        var b = GraphBuilder()
        let x = try b.input("input", shape: [2, 4, 9, 9])
        let y = try b.conv(x, Conv2D(inChannels: 4, outChannels: 8, kernel: 3, stride: 2, padding: 1), name: "conv")
        let z = try b.conv(y, Conv2D(inChannels: 8, outChannels: 8, kernel: 3, padding: 1, groups: 2), name: "grouped")
        _ = z
        let g = b.graph
        let macs: Double = 2 * 8 * 5 * 5 * 4 * 9
        let first = g.cost(of: 0)
        #expect(first.forward.flops == 2 * macs)
        let tensors: Double = 2 * 4 * 81 + 2 * 8 * 25 + 8 * 4 * 9
        #expect(first.forward.bytes == 4 * tensors)
        // The image needs no gradient: only the weight gradient's product.
        #expect(first.backward.flops == 2 * macs)
        #expect(first.update.flops == 4 * 288 && first.update.bytes == 5 * 4 * 288)
        let second = g.cost(of: 1)
        let groupedMacs: Double = 2 * 8 * 5 * 5 * 4 * 9
        #expect(second.forward.flops == 2 * groupedMacs && second.backward.flops == 4 * groupedMacs)

        // torchvision's ResNet-50 at 224x224 does 4.09 G multiply-adds per image (its model card).
        let resnet50 = try ModelSpec.graph("resnet50", batch: 1, size: 224, loss: false).graph
        var convAndLinear = 0.0
        for (k, node) in resnet50.nodes.enumerated() {
            switch node.operation {
            case .conv, .linear: convAndLinear += resnet50.cost(of: k).forward.flops
            default: break
            }
        }
        #expect(abs(convAndLinear / 2 / 4.09e9 - 1) < 0.01, "ResNet-50: \(convAndLinear / 2) multiply-adds")
    }

    /// Every command a step enqueues inside a node is attributed to it, and the parts add up.
    @Test func profileAttribution() throws {
        let (graph, _) = try ModelSpec.graph("cifar_resnet:depth=8,channels=1,classes=4", batch: 2, size: 8)
        let executor = try Executor(graph: graph, context: try Shared.context(), training: true, queues: 2,
                                    optimizer: SGD(learningRate: 0.01, momentum: 0.9))
        var rng = freshGenerator("profile attribution")
        try executor.forward(["input": randomFloats(2 * 64, using: &rng)], labels: [0, 3])
        try executor.backward()
        try executor.synchronize()
        executor.startProfiling()
        try executor.forward(["input": randomFloats(2 * 64, using: &rng)], labels: [1, 2])
        try executor.backward()
        try executor.synchronize()
        let profile = try executor.stopProfiling()
        for (k, node) in graph.nodes.enumerated() {
            #expect(profile.nodes[k].commands > 0, "\(node.name) recorded no command")
            #expect(profile.nodes[k].forwardSeconds > 0, "\(node.name) has no forward time")
            if case .conv = node.operation {
                #expect(profile.nodes[k].backwardSeconds > 0 && profile.nodes[k].updateSeconds > 0, "\(node.name)")
            }
        }
        let attributed = profile.nodes.reduce(0) { $0 + $1.totalSeconds } + profile.otherSeconds
        #expect(abs(attributed - profile.commandSeconds) <= 1e-9 * max(1, profile.commandSeconds))
        #expect(abs(profile.byCommand.values.reduce(0, +) - profile.commandSeconds) <= 1e-9 * max(1, profile.commandSeconds))
        #expect(profile.spanSeconds > 0)
        let half = profile.scaled(by: 0.5)
        var twice = half
        twice.add(half)
        #expect(abs(twice.commandSeconds - profile.commandSeconds) <= 1e-12 * max(1, profile.commandSeconds))
        #expect(executor.deviceBytes >= executor.plan.peakBytes + 3 * 4 * graph.parameters.reduce(0) { $0 + $1.shape.count })
    }

    /// `clnet-bench model --json` prints the shared summary at the top level, and the PyTorch
    /// baseline prints the same keys.
    @Test func jsonShape() throws {
        let result = try runTool("clnet-bench", ["model", "--model", "resnet20", "--batch", "2", "--size", "8", "--warmup", "0",
                                                 "--iters", "2", "--queues", "1,2", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let data = result.stdout
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ModelBenchmarkSummary.keys where key != "deviceMilliseconds" && key != "peakMemoryBytes" {
            #expect(json[key] != nil, "missing \(key)")
        }
        #expect(json["deviceMilliseconds"] is [String: Any] && json["peakMemoryBytes"] is Int)
        #expect(json["framework"] as? String == "clnet" && json["batch"] as? Int == 2 && json["size"] as? Int == 8)
        let layers = try #require(json["layers"] as? [[String: Any]])
        let graph = try ModelSpec.graph("resnet20", batch: 2, size: 8).graph
        #expect(layers.count == graph.nodes.count)
        for key in ["name", "operation", "milliseconds", "share", "gflops", "gbPerSecond", "gemmFraction", "copyFraction",
                    "bound", "rooflineFraction"] {
            #expect(layers.allSatisfy { $0[key] != nil }, "layers lack \(key)")
        }
        let shares = layers.compactMap { $0["share"] as? Double }.reduce(0, +)
        #expect(shares > 0.5 && shares <= 1 + 1e-9)
        #expect((json["runs"] as? [Any])?.count == 2)

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Benchmarks/pytorch_baseline.py")
        let python = try String(contentsOf: script, encoding: .utf8)
        for key in ModelBenchmarkSummary.keys {
            #expect(python.contains("\"\(key)\":"), "pytorch_baseline.py does not print \(key)")
        }
    }
}
