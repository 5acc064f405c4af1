import CLNet
import Foundation
import Testing

/// Weights files that carry their model: `clnet train`, `export` and `prune` record the
/// specification, input size, normalisation and data, and every command that takes --weights
/// uses them.
@Suite("Weights that carry their model")
struct WeightsInfoTests {
    static func temporary(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-info-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The figures after "test loss" (training) or "loss" (eval) in a line of output.
    static func figures(_ text: String, after marker: String) -> String? {
        guard let line = text.split(separator: "\n").last(where: { $0.contains(marker) }),
              let range = line.range(of: marker) else { return nil }
        return String(line[range.upperBound...].prefix { $0 != "|" && $0 != "i" }).trimmingCharacters(in: .whitespaces)
    }

    @Test func metadataRoundTrips() throws {
        let info = WeightsInfo(model: "resnet20:channels=1,classes=10", imageSize: 28, mean: [0.286], std: [0.353],
                               dataset: "fashion-mnist", classes: ["a, b", "c\"d"])
        let back = try #require(try WeightsInfo(metadata: info.metadata, file: "f"))
        #expect(back == info)
        #expect(try WeightsInfo(metadata: ["format": "pt"], file: "f") == nil, "a PyTorch file has none")
        #expect(throws: CLNetError.self) { try WeightsInfo(metadata: ["clnet.model": "resnet20", "clnet.mean": "x"], file: "f") }
        // A --model must describe the file's parameters; what it leaves out comes from the file.
        #expect(try WeightsInfo.model(given: "resnet20", info: info, file: "f") == "resnet20:channels=1,classes=10")
        #expect(try WeightsInfo.model(given: nil, info: info, file: "f") == info.model)
        let disagree = #expect(throws: CLNetError.self) { try WeightsInfo.model(given: "resnet32", info: info, file: "f") }
        #expect("\(disagree.map { "\($0)" } ?? "")".contains("resnet20:channels=1,classes=10"))
        #expect(throws: CLNetError.self) { try WeightsInfo.model(given: "resnet20:classes=5", info: info, file: "f") }
        // Options that change the computation but no parameter must agree too.
        let dilated = WeightsInfo(model: "resnet50:channels=3,classes=1000")
        #expect(throws: CLNetError.self) { try WeightsInfo.model(given: "resnet50:dilation=0.1.1", info: dilated, file: "f") }
        #expect(throws: CLNetError.self) { try WeightsInfo.model(given: "resnet20:stochastic_depth=0.1", info: info, file: "f") }
        // What train --weights keeps of a record: the network, not the data's sizes or the run's depth.
        #expect(WeightsInfo.removing(["channels", "classes", "stochastic_depth"],
                                     from: "resnet:block=basic,channels=1,layers=1.1,classes=10,stochastic_depth=0.1")
                == "resnet:block=basic,layers=1.1")
        #expect(WeightsInfo.removing(["classes"], from: "resnet18:classes=10") == "resnet18")
        let none = #expect(throws: CLNetError.self) { try WeightsInfo.model(given: nil, info: nil, file: "pt.safetensors") }
        #expect("\(none.map { "\($0)" } ?? "")".contains("give --model"))
    }

    /// Train a few steps on a subset, then evaluate with --weights alone: the same figures as
    /// the run's own final evaluation, because the file says the model and the subset's
    /// normalisation. Export and prune keep the record for their rewritten models.
    @Test func weightsAloneAreEnough() throws {
        let dir = try Self.temporary("train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run")
        let trained = try TrainCommandTests.clnet(["train", "--model", "resnet20", "--train-subset", "512", "--test-subset", "300",
                                              "--batch-size", "64", "--epochs", "1", "--output", run.path])
        try #require(trained.status == 0, "\(trained.err)")
        #expect(trained.out.contains("resnet20:channels=1,classes=10"), "the full specification is printed")
        let trainedFigures = try #require(Self.figures(trained.out, after: "test loss"))
        let weights = run.appendingPathComponent("model.safetensors")
        let info = try #require(try WeightsInfo.read(try SafeTensors(contentsOf: weights), path: weights.path))
        #expect(info.model == "resnet20:channels=1,classes=10" && info.imageSize == 28 && info.dataset == "fashion-mnist")
        #expect(info.mean?.count == 1 && info.std?.count == 1)

        for file in [weights, run.appendingPathComponent("checkpoint.safetensors")] {
            let e = try TrainCommandTests.clnet(["eval", "--weights", file.path, "--subset", "300", "--batch-size", "300"])
            try #require(e.status == 0, "\(e.err)")
            #expect(Self.figures(e.out, after: "loss") == trainedFigures, "\(file.lastPathComponent): \(e.out) against \(trainedFigures)")
        }
        // Folded for inference, then evaluated with no --model: the file says fold_bn=1.
        let folded = dir.appendingPathComponent("folded.safetensors")
        let x = try TrainCommandTests.clnet(["export", "--weights", weights.path, "--fold-bn", "--output", folded.path])
        try #require(x.status == 0, "\(x.err)")
        let foldedInfo = try WeightsInfo.read(try SafeTensors(contentsOf: folded), path: folded.path)
        #expect(foldedInfo?.model == "resnet20:channels=1,classes=10,fold_bn=1" && foldedInfo?.mean == info.mean)
        let fe = try TrainCommandTests.clnet(["eval", "--weights", folded.path, "--subset", "300", "--batch-size", "300"])
        try #require(fe.status == 0, "\(fe.err)")
        #expect(fe.out.contains("fold_bn=1") && fe.out.contains("top-1"), "\(fe.out)")
        // Pruned, then fine-tuned from the pruned file with no --model.
        let pruned = dir.appendingPathComponent("pruned.safetensors")
        let p = try TrainCommandTests.clnet(["prune", "--weights", weights.path, "--fraction", "0.25", "--output", pruned.path])
        try #require(p.status == 0, "\(p.err)")
        let prunedSpec = try #require(try WeightsInfo.read(try SafeTensors(contentsOf: pruned), path: pruned.path)?.model)
        #expect(prunedSpec.contains("mid="))
        let tune = try TrainCommandTests.clnet(["train", "--weights", pruned.path, "--train-subset", "128", "--test-subset", "64",
                                           "--batch-size", "64", "--epochs", "1", "--output", dir.appendingPathComponent("tuned").path])
        #expect(tune.status == 0, "\(tune.err)")
        let widths = try #require(prunedSpec.split(separator: ",").first { $0.contains("mid=") }).split(separator: ":").last!
        #expect(tune.out.contains(String(widths)), "the pruned widths are trained: \(tune.out)")
        // A --model that is another network is refused with both.
        let wrong = try TrainCommandTests.clnet(["eval", "--model", "resnet32", "--weights", weights.path, "--subset", "10"])
        #expect(wrong.status != 0 && wrong.err.contains("resnet32") && wrong.err.contains("resnet20:channels=1,classes=10"), "\(wrong.err)")
    }

    /// A file without CLNet's metadata (as PyTorch writes them) still works, with --model.
    @Test func filesWithoutMetadataNeedModel() throws {
        let dir = try Self.temporary("pt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (graph, _) = try ModelSpec.graph("resnet20:channels=1,classes=10", batch: 1, size: 28)
        let weights = dir.appendingPathComponent("pt.safetensors")
        try SafeTensors.write(graph.parameters.map { p in
            (p.name, .float32(fixtureValues(p.name, count: p.shape.count, role: p.role, fanIn: p.shape.sampleCount), shape: p.shape.dims))
        }, to: weights, metadata: ["format": "pt"])
        let bare = try TrainCommandTests.clnet(["eval", "--weights", weights.path, "--subset", "20"])
        #expect(bare.status != 0 && bare.err.contains("give --model"), "\(bare.err)")
        let given = try TrainCommandTests.clnet(["eval", "--model", "resnet20", "--weights", weights.path, "--subset", "20"])
        #expect(given.status == 0 && given.out.contains("top-1"), "\(given.err)")
    }
}
