import CLNet
import Foundation
import Testing

@Suite("Tasks: super-resolution and segmentation data, their measures, training and predict")
struct TaskTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// Pillow's bicubic filter (`Fixtures/make_bicubic_fixture.py`) away from the edges, where
    /// it and MATLAB's `imresize` agree: shrinking (antialiased), enlarging, and odd sizes.
    @Test func bicubicMatchesPillowInside() throws {
        let file = try SafeTensors(contentsOf: Self.fixtures.appendingPathComponent("bicubic.safetensors"))
        let x = try file.floats("x")
        // The outputs whose taps all fall inside the 12x16 image (a shrinking kernel reaches
        // two input pixels times the factor).
        let cases: [(String, Int, Int, ClosedRange<Int>, ClosedRange<Int>)] = [
            ("down", 6, 8, 2...3, 2...5), ("up", 36, 48, 7...28, 7...40), ("odd", 7, 9, 2...4, 2...6),
        ]
        for (name, h, w, rows, columns) in cases {
            let want = try file.floats(name), got = Bicubic.resize(x, height: 12, width: 16, outHeight: h, outWidth: w)
            var worst = 0.0
            for r in rows { for c in columns { worst = max(worst, Double(abs(got[r * w + c] - want[r * w + c]))) } }
            #expect(worst <= 1e-5, "\(name): largest difference \(worst)")
        }
        // A constant stays constant everywhere, edges included (the weights sum to 1).
        #expect(Bicubic.resize([Float](repeating: 0.25, count: 35), height: 5, width: 7, outHeight: 15, outWidth: 21)
            .allSatisfy { abs($0 - 0.25) < 1e-6 })
    }

    @Test func psnrAndSSIM() {
        let a: [Float] = (0..<64).map { Float($0 % 8) / 8 }
        #expect(ImageQuality.psnr(a, a, channels: 1, height: 8, width: 8, border: 0) >= 119)
        // An error of 0.1 everywhere: 20 dB.
        #expect(abs(ImageQuality.psnr(a.map { $0 + 0.1 }, a, channels: 1, height: 8, width: 8, border: 0) - 20) < 1e-4)
        // The border is left out: an error there changes nothing.
        var b = a
        b[0] = 1
        #expect(ImageQuality.psnr(b, a, channels: 1, height: 8, width: 8, border: 1) >= 119)
        let big: [Float] = (0..<(16 * 16)).map { Float(($0 * 37) % 101) / 101 }
        #expect(abs(ImageQuality.ssim(big, big, channels: 1, height: 16, width: 16, border: 0) - 1) < 1e-9)
        #expect(ImageQuality.ssim(big.map { 1 - $0 }, big, channels: 1, height: 16, width: 16, border: 0) < 0)
    }

    /// The target is the image, the input its bicubic reduction enlarged back; sizes are cropped
    /// to a multiple of the scale; RGB becomes luminance.
    @Test func superResolutionSamples() throws {
        var rng = SeededGenerator(seed: 3)
        let pixels = (0..<(2 * 3 * 10 * 10)).map { _ in UInt8(rng.next() % 256) }
        let data = try ImageDataset(pixels: pixels, labels: [0, 1], channels: 3, height: 10, width: 10, classes: 2)
        let base = try InMemorySamples(data: data, preprocessing: Preprocessing(mean: [0, 0, 0], std: [1, 1, 1]))
        let sr = try SuperResolutionSamples(base: base, scale: 3, luminance: true)
        #expect((sr.channels, sr.height, sr.width, sr.targetCount, sr.labelsPerSample) == (1, 9, 9, 81, 0))
        let loader = try BatchLoader(source: sr, batchSize: 2, training: false, seed: 0)
        let batch = try loader.batch(epoch: 0, index: 0)
        #expect(batch.inputs.count == 162 && batch.targets.count == 162 && batch.labels.isEmpty)
        // Sample 1's luminance at (2, 5), and the input made from the target as the task says.
        let p = { (ch: Int) in Float(pixels[((1 * 3 + ch) * 10 + 2) * 10 + 5]) / 255 }
        #expect(abs(batch.targets[81 + 2 * 9 + 5] - (16 + 65.481 * p(0) + 128.553 * p(1) + 24.966 * p(2)) / 255) < 1e-5)
        let target = Array(batch.targets[81...])
        let low = Bicubic.resize(target, height: 9, width: 9, outHeight: 3, outWidth: 3)
        #expect(Array(batch.inputs[81...]) == Bicubic.resize(low, height: 3, width: 3, outHeight: 9, outWidth: 9))
        #expect(throws: CLNetError.self) { _ = try SuperResolutionSamples(base: base, scale: 6) }
    }

    @Test func syntheticSegmentationAndItsScore() throws {
        let garments = try ImageDataset(pixels: (0..<(3 * 4 * 4)).map { UInt8($0 % 16 * 16) }, labels: [2, 5, 9],
                                        channels: 1, height: 4, width: 4, classes: 10)
        let a = try SegmentationDataset.compositing(garments, count: 20, size: 9, seed: 7)
        let b = try SegmentationDataset.compositing(garments, count: 20, size: 9, seed: 7)
        #expect(a.pixels == b.pixels && a.masks == b.masks && a.classes == 11 && a.count == 20)
        // Labelled pixels are the garments' inked ones; the rest is background.
        #expect(zip(a.pixels, a.masks).allSatisfy { ($0 > 64) == ($1 != 0) })
        #expect(Set(a.masks).isSubset(of: [0, 3, 6, 10]))
        // One mirrored sample: the input and its labels move together.
        let samples = SegmentationSamples(data: a, mean: [0], std: [1])
        let loader = try BatchLoader(source: samples, batchSize: 20, training: true, seed: 4)
        let batch = try loader.batch(epoch: 0, index: 0)
        #expect(batch.labels.count == 20 * 81)
        for i in 0..<(20 * 81) { #expect((batch.inputs[i] > 64.0 / 255) == (batch.labels[i] != 0)) }
        var score = SegmentationScore(classes: 3)
        // Two pixels of class 1 (one predicted 2), one of class 2, one ignored.
        let logits: [Float] = [0, 0, 0, 0,  1, 0, 0, 0,  0, 1, 1, 0]
        score.add(logits: logits, labels: [1, 1, 2, 255], count: 1, height: 2, width: 2)
        #expect(abs(score.pixelAccuracy - 2.0 / 3) < 1e-12)
        #expect(score.intersectionOverUnion[0] == nil && score.intersectionOverUnion[1] == 0.5 && score.intersectionOverUnion[2] == 0.5)
        #expect(score.meanIoU == 0.5)
    }

    /// A folder of images and masks: labels from the masks' first channel, 255 kept as ignored;
    /// a mask of the wrong size, a label beyond the classes and a missing mask are refused.
    @Test func segmentationFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-seg-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        for sub in ["images", "masks"] { try FileManager.default.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true) }
        func png(_ name: String, _ w: Int, _ h: Int, _ value: (Int) -> UInt8) throws {
            let rgb = (0..<(w * h)).flatMap { i -> [UInt8] in let v = value(i); return [v, v, v] }
            try Data(try PNG.encode(width: w, height: h, rgb: rgb)).write(to: dir.appendingPathComponent(name))
        }
        try png("images/a.png", 4, 3) { UInt8($0 * 10) }
        try png("masks/a.png", 4, 3) { $0 == 5 ? 255 : UInt8($0 % 3) }
        try png("images/b.jpg.png", 4, 3) { UInt8(200 - $0) }
        try png("masks/b.jpg.png", 4, 3) { _ in 2 }
        let data = try SegmentationDataset.folder(dir.path)
        #expect((data.count, data.channels, data.height, data.width, data.classes) == (2, 3, 3, 4, 3))
        let want: [UInt8] = (0..<12).map { i -> UInt8 in i == 5 ? 255 : UInt8(i % 3) }
        #expect(Array(data.masks.prefix(12)) == want)
        #expect(data.pixels[12 * 3 + 1] == 199, "image b, red channel, pixel 1")
        #expect(throws: CLNetError.self) { _ = try SegmentationDataset.folder(dir.path, classes: 2) }
        try png("masks/a.png", 3, 3) { _ in 0 }
        #expect(throws: CLNetError.self) { _ = try SegmentationDataset.folder(dir.path) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("masks/a.png"))
        #expect(throws: CLNetError.self) { _ = try SegmentationDataset.folder(dir.path) }
    }

    /// A few steps of each task through the trainer: the loss falls, and the evaluation reports
    /// the task's measures; data that does not fit the model's loss is refused.
    @Test func trainerRunsEachTask() throws {
        let garments = try DataSource(parsing: "fashion-mnist").load(train: false).prefix(400)
        let seg = SegmentationSamples(data: try SegmentationDataset.compositing(garments, count: 64, size: 32, seed: 1))
        var config = TrainingConfiguration(model: "denseaspp:growth=4,blocks=2.2.2.2,init=8,bn_size=2,d0=8,d1=4,rates=1.2")
        (config.batchSize, config.evalBatchSize, config.learningRate, config.epochs) = (8, 32, 0.05, 1)
        let segmenter = try Trainer(configuration: config, train: seg, test: seg)
        let s = try segmenter.trainEpoch()
        #expect(s.stepLosses.last! < s.stepLosses.first!, "segmentation loss \(s.stepLosses)")
        let e = try segmenter.evaluate()
        #expect(e.meanIoU.map { (0...1).contains($0) } == true && (0...1).contains(e.top1))
        let images = try InMemorySamples(data: garments, preprocessing: Preprocessing(mean: [0], std: [1]))
        let sr = try SuperResolutionSamples(base: images, scale: 2)
        var c = TrainingConfiguration(model: "drrn:b=1,u=2,width=8")
        (c.batchSize, c.evalBatchSize, c.learningRate) = (16, 100, 0.01)
        let upscaler = try Trainer(configuration: c, train: sr, test: sr)
        try upscaler.trainEpoch(limit: 5)
        let q = try upscaler.evaluate()
        #expect(q.psnr!.isFinite && q.bicubicPSNR! > 10 && (0...1).contains(q.ssim!), "\(q)")
        #expect(throws: CLNetError.self) { _ = try Trainer(configuration: TrainingConfiguration(model: "resnet20"), train: sr, test: nil) }
        #expect(throws: CLNetError.self) { _ = try Trainer(configuration: c, train: seg, test: nil) }
    }

    /// `clnet predict --task segment` and `--task sr` write one PNG per image, named after it.
    @Test func predictWritesImages() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-task-predict-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let picture = dir.appendingPathComponent("garment.png")
        let rgb = (0..<(20 * 16)).flatMap { i -> [UInt8] in let v = UInt8(i * 7 % 256); return [v, v / 2, 255 - v] }
        try Data(try PNG.encode(width: 20, height: 16, rgb: rgb)).write(to: picture)
        for (spec, task, size) in [("drrn:b=1,u=2,width=8,channels=1", "sr", (40, 32)),
                                   ("denseaspp:growth=4,blocks=2.2.2.2,init=8,bn_size=2,d0=8,d1=4,rates=1.2,classes=4,channels=3", "segment", (20, 16))] {
            let (graph, _) = try ModelSpec.graph(spec, batch: 1, size: 16, loss: false)
            let weights = dir.appendingPathComponent("\(task).safetensors")
            var rng = SeededGenerator(seed: 5)
            try SafeTensors.write(graph.parameters.map { p in
                (p.name, .float32((0..<p.shape.count).map { _ in p.role == .runningVar ? 1 : Float(Int(rng.next() % 200) - 100) / 1000 },
                                  shape: p.shape.dims))
            }, to: weights)
            let out = dir.appendingPathComponent("out-\(task)")
            let r = try runTool("clnet", ["predict", "--model", spec, "--weights", weights.path, "--task", task, "--scale", "2",
                                          "--output-images", out.path, picture.path])
            #expect(r.status == 0, "\(task): \(r.stderr)")
            let written = try ImageFile.read(out.appendingPathComponent("garment.png").path)
            #expect((written.width, written.height) == size, "\(task)")
        }
    }
}
