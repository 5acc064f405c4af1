import CLNet
import Foundation
import Testing

/// Writes an IDX file of unsigned bytes.
func writeIDX(_ url: URL, shape: [Int], values: [UInt8]) throws {
    var bytes: [UInt8] = [0, 0, 8, UInt8(shape.count)]
    for d in shape { bytes += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
    try Data(bytes + values).write(to: url)
}

/// A small MNIST-style data set in `dir`: `count` random 28x28 images of 10 classes, whose
/// class sets the image's brightness pattern (so that a network can learn it).
func writeSyntheticIDX(_ dir: URL, count: Int, seed: UInt64, prefix: String = "train") throws {
    var rng = SeededGenerator(seed: seed)
    var pixels: [UInt8] = [], labels: [UInt8] = []
    for _ in 0..<count {
        let label = Int(rng.next() % 10)
        labels.append(UInt8(label))
        for y in 0..<28 {
            for x in 0..<28 {
                let stripe = (x / 3 + label) % 10 == 0 || (y / 3 == label) ? 200 : 20
                pixels.append(UInt8(min(255, stripe + Int(rng.next() % 40))))
            }
        }
    }
    try writeIDX(dir.appendingPathComponent("\(prefix)-images-idx3-ubyte"), shape: [count, 28, 28], values: pixels)
    try writeIDX(dir.appendingPathComponent("\(prefix)-labels-idx1-ubyte"), shape: [count], values: labels)
}

func temporaryDirectory(_ label: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-\(label)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

func gzip(_ url: URL) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/gzip")
    p.arguments = ["-f", url.path]
    try p.run()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0)
}

@Suite("Data: IDX and CIFAR readers, batches and augmentation")
struct DataTests {
    @Test func idxPlainAndGzipped() throws {
        let dir = try temporaryDirectory("idx")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeSyntheticIDX(dir, count: 7, seed: 1)
        try writeSyntheticIDX(dir, count: 5, seed: 2, prefix: "t10k")
        let plain = try DataSource(parsing: "mnist:\(dir.path)").load(train: true)
        #expect(plain.count == 7 && plain.channels == 1 && plain.height == 28 && plain.width == 28 && plain.classes == 10)
        // Gzipped files (as MNIST and Debian's Fashion-MNIST ship) read the same.
        for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] { try gzip(dir.appendingPathComponent(name)) }
        let zipped = try DataSource(parsing: "mnist:\(dir.path)").load(train: true)
        #expect(zipped.pixels == plain.pixels && zipped.labels == plain.labels)
        #expect(try DataSource(parsing: "mnist:\(dir.path)").load(train: false).count == 5)
    }

    @Test func malformedIDXFilesSayWhatIsWrong() throws {
        let dir = try temporaryDirectory("idx-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let images = dir.appendingPathComponent("train-images-idx3-ubyte"), labels = dir.appendingPathComponent("train-labels-idx1-ubyte")
        func expectFailure(_ text: String, _ comment: Comment) {
            let error = #expect(throws: CLNetError.self, comment) { try DataSource(parsing: "mnist:\(dir.path)").load(train: true) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(text), "\(comment): \(error.map { "\($0)" } ?? "no error")")
        }
        expectFailure("no train-images-idx3-ubyte", "missing files")
        try writeIDX(labels, shape: [2], values: [1, 2])
        try Data([1, 2, 3, 4, 5]).write(to: images)
        expectFailure("is not an IDX file", "bad magic")
        try Data([0, 0, 0x0D, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]).write(to: images)
        expectFailure("only unsigned bytes", "float data")
        try writeIDX(images, shape: [2, 4, 4], values: [UInt8](repeating: 0, count: 31))
        expectFailure("truncated", "short data")
        try writeIDX(images, shape: [3, 4, 4], values: [UInt8](repeating: 0, count: 48))
        expectFailure("has 3 images", "label count")
        try writeIDX(images, shape: [2, 4, 4], values: [UInt8](repeating: 0, count: 32))
        try gzip(images)
        let gz = dir.appendingPathComponent("train-images-idx3-ubyte.gz")
        let bytes = try Data(contentsOf: gz)
        try bytes.prefix(bytes.count - 12).write(to: gz)
        expectFailure("not valid gzip data", "truncated gzip")
        #expect(throws: CLNetError.self) { try DataSource(parsing: "imagenet:/x") }
    }

    @Test func cifarRecords() throws {
        let dir = try temporaryDirectory("cifar")
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SeededGenerator(seed: 3)
        func records(_ labels: [UInt8], fine: Bool) -> [UInt8] {
            labels.flatMap { l in (fine ? [0, l] : [l]) + (0..<3072).map { _ in UInt8(rng.next() & 255) } }
        }
        let file = dir.appendingPathComponent("test_batch.bin")
        let bytes = records([3, 9, 0], fine: false)
        try Data(bytes).write(to: file)
        let data = try DataSource(parsing: "cifar10:\(dir.path)").load(train: false)
        #expect(data.labels == [3, 9, 0] && data.channels == 3 && data.height == 32)
        #expect(Array(data.pixels[3072..<3072 + 10]) == Array(bytes[3073 + 1..<3073 + 11]), "the second record's pixels")
        try Data(bytes.dropLast()).write(to: file)
        let short = #expect(throws: CLNetError.self) { try DataSource(parsing: "cifar10:\(dir.path)").load(train: false) }
        #expect("\(short.map { "\($0)" } ?? "")".contains("not a whole number of 3073-byte"))
        try Data(records([10], fine: false)).write(to: file)
        let label = #expect(throws: CLNetError.self) { try DataSource(parsing: "cifar10:\(dir.path)").load(train: false) }
        #expect("\(label.map { "\($0)" } ?? "")".contains("label 10"))
        try Data(records([99, 5], fine: true)).write(to: dir.appendingPathComponent("test.bin"))
        #expect(try DataSource(parsing: "cifar100:\(dir.path)").load(train: false).labels == [99, 5])
        let missing = #expect(throws: CLNetError.self) { try DataSource(parsing: "cifar10:\(dir.path)").load(train: true) }
        #expect("\(missing.map { "\($0)" } ?? "")".contains("data_batch_1.bin"))
    }

    @Test func batchesNormaliseCropAndFlip() throws {
        // One 3-channel 4x4 image whose pixel values encode their position.
        let pixels = (0..<2 * 48).map { UInt8($0 % 48 * 5) }
        let data = try ImageDataset(pixels: pixels, labels: [1, 0], channels: 3, height: 4, width: 4, classes: 2)
        let plain = Preprocessing(mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
        let eval = try BatchLoader(data: data, batchSize: 3, preprocessing: plain, training: false, seed: 1)
        #expect(eval.batchesPerEpoch == 1)
        let b = try eval.batch(epoch: 0, index: 0)
        #expect(b.inputs.count == 3 * 48 && b.count == 2 && b.labels == [1, 0, 1], "padded with the first sample")
        #expect(abs(b.inputs[5] - (Float(25) / 255 - 0.5) / 0.25) < 1e-6)
        // Training batches: shapes kept, the same for the same (seed, epoch, index), different otherwise.
        let augment = Preprocessing(mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], cropPadding: 2, horizontalFlip: true)
        let train = try BatchLoader(data: data, batchSize: 2, preprocessing: augment, training: true, seed: 7)
        let again = try BatchLoader(data: data, batchSize: 2, preprocessing: augment, training: true, seed: 7)
        var seen: Set<[Float]> = []
        for epoch in 0..<8 {
            let x = try train.batch(epoch: epoch, index: 0)
            #expect(x.inputs.count == 2 * 48 && Set(x.labels) == [0, 1])
            #expect(x.inputs == (try again.batch(epoch: epoch, index: 0).inputs))
            seen.insert(x.inputs)
        }
        #expect(seen.count > 4, "crops and flips vary between epochs")
        // A flip alone mirrors each row.
        let flipOnly = Preprocessing(mean: [0, 0, 0], std: [1, 1, 1], horizontalFlip: true)
        let one = try ImageDataset(pixels: Array(pixels[0..<48]), labels: [0], channels: 3, height: 4, width: 4, classes: 1)
        let loader = try BatchLoader(data: one, batchSize: 1, preprocessing: flipOnly, training: true, seed: 0)
        // As the loader computes it: v * (1 / (255 * std)) - mean / std.
        let scale: Float = 1 / 255
        let straight = (0..<48).map { Float(pixels[$0]) * scale }
        let mirrored = (0..<48).map { Float(pixels[$0 / 4 * 4 + 3 - $0 % 4]) * scale }
        var kinds: Set<Int> = []
        for epoch in 0..<16 {
            let x = try loader.batch(epoch: epoch, index: 0).inputs
            if x == straight { kinds.insert(0) } else if x == mirrored { kinds.insert(1) } else { Issue.record("neither the image nor its mirror") }
        }
        #expect(kinds == [0, 1])
    }
}

@Suite("Learning-rate schedules")
struct ScheduleTests {
    @Test func valuesAtChosenSteps() throws {
        let step = try LearningRateSchedule(parsing: "step:2:0.5", base: 0.4, stepsPerEpoch: 10, epochs: 6, warmupEpochs: 0)
        #expect([0, 19, 20, 39, 40, 59].map { step.rate(at: $0) } == [0.4, 0.4, 0.2, 0.2, 0.1, 0.1])
        let multi = try LearningRateSchedule(parsing: "multistep:2.5", base: 1, stepsPerEpoch: 10, epochs: 6, warmupEpochs: 0)
        #expect([0, 19, 20, 49, 50].map { multi.rate(at: $0) }.map { ($0 * 1000).rounded() / 1000 } == [1, 1, 0.1, 0.1, 0.01])
        let cosine = try LearningRateSchedule(parsing: "cosine", base: 0.1, stepsPerEpoch: 10, epochs: 2, warmupEpochs: 0)
        #expect(cosine.rate(at: 0) == 0.1)
        #expect(abs(cosine.rate(at: 10) - 0.05) < 1e-12)
        #expect(abs(cosine.rate(at: 20)) < 1e-12)
        let warm = try LearningRateSchedule(parsing: "cosine", base: 0.1, stepsPerEpoch: 10, epochs: 3, warmupEpochs: 1)
        #expect(abs(warm.rate(at: 0) - 0.01) < 1e-12 && abs(warm.rate(at: 4) - 0.05) < 1e-12 && warm.rate(at: 9) == 0.1)
        #expect(warm.rate(at: 10) == 0.1, "the cosine starts after the warm-up")
        #expect(abs(warm.rate(at: 20) - 0.05) < 1e-12)
        let constant = try LearningRateSchedule(parsing: "constant", base: 0.3, stepsPerEpoch: 5, epochs: 1, warmupEpochs: 0)
        #expect(constant.rate(at: 4) == 0.3)
        for bad in ["linear", "step", "step:0", "multistep:a.b", "step:3:2"] {
            #expect(throws: CLNetError.self, "\(bad)") {
                try LearningRateSchedule(parsing: bad, base: 0.1, stepsPerEpoch: 10, epochs: 1, warmupEpochs: 0)
            }
        }
    }
}
