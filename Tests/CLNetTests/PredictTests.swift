import CLNet
import Foundation
import Testing

/// `clnet predict` against torchvision and PIL: `Fixtures/make_image_fixtures.py` decoded the
/// images of `Fixtures/images` with PIL, put them through torchvision's evaluation transform and
/// a torchvision ResNet-18 (weights from `fixtureValues`' formula).
@Suite("clnet predict against torchvision")
struct PredictTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    struct Fixture {
        var files: [URL], size: Int, pixels: [Int64], logits: [Float]
    }

    static func fixture() throws -> Fixture {
        let file = try SafeTensors(contentsOf: fixtures.appendingPathComponent("imagenet_eval.safetensors"))
        let names = try #require(file.metadata["files"]).split(separator: ",").map(String.init)
        return Fixture(files: names.map { fixtures.appendingPathComponent("images/\($0)") },
                       size: Int(try #require(file.metadata["size"]))!,
                       pixels: try file.integers("pixels"), logits: try file.floats("logits"))
    }

    /// The eval transform's tensor from the fixture's PIL pixels, as ToTensor and Normalize make it.
    static func normalised(_ pixels: [Int64], size: Int) -> [Float] {
        let plane = size * size
        return pixels.enumerated().map { i, v in
            let c = i / plane % 3
            return (Float(v) / 255 - ImageTransform.imageNetMean[c]) / ImageTransform.imageNetStd[c]
        }
    }

    /// Decoding and the transform in the library, image by image: each file's crop against PIL's,
    /// in grey levels. PNG decodes exactly; JPEG goes through libjpeg-turbo here and in Pillow, so
    /// only the resize's rounding of the same pixels can differ.
    @Test func decodingAndResizeMatchPIL() throws {
        let f = try Self.fixture()
        let per = 3 * f.size * f.size
        let transform = try ImageTransform.evaluation(size: f.size, mean: [0, 0, 0], std: [1, 1, 1])
        for (i, url) in f.files.enumerated() {
            var rng = SeededGenerator(seed: 0)
            let ours = transform.tensor(try ImageFile.read(url.path), rng: &rng).map { Int(($0 * 255).rounded()) }
            let theirs = f.pixels[(i * per)..<((i + 1) * per)].map { Int($0) }
            let differences = zip(ours, theirs).map { abs($0 - $1) }
            let worst = differences.max() ?? 0, differing = differences.filter { $0 > 0 }.count
            #expect(worst <= 1, "\(url.lastPathComponent): \(differing) of \(per) values differ from PIL's, by up to \(worst) grey levels")
            print("\(url.lastPathComponent): \(differing) of \(per) values differ from PIL's, by up to \(worst) grey levels")
        }
    }

    @Test func predictMatchesTorchvision() throws {
        let f = try Self.fixture()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-predict-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let spec = "resnet18:classes=10"
        let (graph, _) = try ModelSpec.graph(spec, batch: 1, size: f.size)
        let weights = dir.appendingPathComponent("model.safetensors")
        try SafeTensors.write(graph.parameters.map { p in
            (p.name, .float32(fixtureValues(p.name, count: p.shape.count, role: p.role, fanIn: p.shape.sampleCount),
                              shape: p.shape.dims))
        }, to: weights)
        let names = (0..<10).map { "class \($0)" }
        try ImageFolder.writeClasses(names, to: dir.appendingPathComponent("classes.txt"))

        // Batches of 3 over 7 images: the last one padded.
        let out = dir.appendingPathComponent("out.safetensors")
        let r = try runTool("clnet", ["predict", "--model", "resnet18", "--weights", weights.path, "--image-size", "\(f.size)",
                                      "--batch-size", "3", "--top", "3", "--json", "--output", out.path] + f.files.map(\.path))
        try #require(r.status == 0, "\(r.stderr)")
        let got = try SafeTensors(contentsOf: out)
        let input = try got.floats("input"), want = Self.normalised(f.pixels, size: f.size)
        try #require(input.count == want.count)
        let mad = zip(input, want).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(want.count)
        #expect(mad < 0.01, "mean absolute difference of the inputs \(mad) (normalised units)")
        let logits = try got.floats("logits")
        let error = relativeError(logits, f.logits)
        #expect(error < 1e-2, "logits: relative error \(error) against torchvision")
        func argmax(_ row: ArraySlice<Float>) -> Int { row.indices.max { row[$0] < row[$1] }! - row.startIndex }
        for i in f.files.indices {
            #expect(argmax(logits[(i * 10)..<((i + 1) * 10)]) == argmax(f.logits[(i * 10)..<((i + 1) * 10)]),
                    "\(f.files[i].lastPathComponent): top-1")
        }
        // The JSON names each file and its classes from classes.txt beside the weights.
        let records = try JSONSerialization.jsonObject(with: r.stdout) as? [[String: Any]]
        #expect(records?.count == f.files.count)
        let first = records?.first?["top"] as? [[String: Any]]
        #expect(first?.count == 3 && (first?.first?["name"] as? String)?.hasPrefix("class ") == true)
        let p = first?.compactMap { $0["probability"] as? Double } ?? []
        #expect(p.count == 3 && p == p.sorted(by: >) && p.allSatisfy { $0 > 0 && $0 <= 1 })
    }

    @Test func aFileThatIsNotAnImageFailsWithoutOutput() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-predict-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (graph, _) = try ModelSpec.graph("resnet18:classes=4", batch: 1, size: 32)
        let weights = dir.appendingPathComponent("w.safetensors")
        try SafeTensors.write(graph.parameters.map { p in
            (p.name, .float32(fixtureValues(p.name, count: p.shape.count, role: p.role, fanIn: p.shape.sampleCount), shape: p.shape.dims))
        }, to: weights)
        let text = dir.appendingPathComponent("notes.jpg")
        try Data("not a picture".utf8).write(to: text)
        let out = dir.appendingPathComponent("out.safetensors")
        let good = Self.fixtures.appendingPathComponent("images/a_photo.jpg").path
        let r = try runTool("clnet", ["predict", "--model", "resnet18", "--weights", weights.path, "--image-size", "32",
                                      "--output", out.path, good, text.path])
        #expect(r.status != 0)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(text.path) && lines[0].contains("not a JPEG or PNG"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path), "no output file")
        // Without a class list, indices are printed; the classifier's size comes from the weights.
        let plain = try runTool("clnet", ["predict", "--model", "resnet18", "--weights", weights.path, "--image-size", "32",
                                          "--top", "2", good])
        #expect(plain.status == 0, "\(plain.stderr)")
        let printed = String(decoding: plain.stdout, as: UTF8.self)
        #expect(printed.contains("a_photo.jpg") && printed.contains("class ") && printed.split(separator: "\n").count == 3, "\(printed)")
    }
}
