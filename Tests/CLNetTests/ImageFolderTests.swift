import CLNet
import CTurboJPEG
import Foundation
import Testing

/// Image folders in torchvision's layout: scanning, refusals, the threaded loader, bad files,
/// and `clnet train` / `clnet predict` on one.
@Suite("Image folders")
struct ImageFolderTests {
    /// A folder `root/{train,val}/{classes}/...` of small images, `perClass` per class and
    /// split, alternating JPEG and PNG, each a flat colour of its class plus its index.
    static func makeFolder(classes: [String] = ["dog", "cat", "bird"], perClass: Int = 4, size: Int = 20) throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-folder-\(UUID().uuidString)")
        for split in ["train", "val"] {
            for (c, name) in classes.enumerated() {
                let dir = root.appendingPathComponent("\(split)/\(name)")
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                for i in 0..<perClass {
                    let rgb = (0..<(size * size)).flatMap { (_: Int) -> [UInt8] in [UInt8(c * 80), UInt8(i * 20), 128] }
                    let bytes = i % 2 == 0
                        ? try ImageFileTests.jpeg(rgb, width: size, height: size, format: TJPF_RGB, subsampling: TJSAMP_444)
                        : try PNG.encode(width: size, height: size, rgb: rgb)
                    try Data(bytes).write(to: dir.appendingPathComponent("img\(i).\(i % 2 == 0 ? "jpg" : "png")"))
                }
            }
        }
        return root
    }

    @Test func scanFollowsTorchvision() throws {
        let root = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let train = root.appendingPathComponent("train")
        // Any case of the extensions, files in subfolders, and other files skipped and counted.
        try FileManager.default.createDirectory(at: train.appendingPathComponent("cat/more"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: train.appendingPathComponent("cat/img0.jpg"), to: train.appendingPathComponent("cat/more/X.JPEG"))
        try Data("notes".utf8).write(to: train.appendingPathComponent("dog/notes.txt"))
        try Data("noext".utf8).write(to: train.appendingPathComponent("dog/README"))
        let folder = try ImageFolder(root: root.path)
        #expect(folder.classes == ["bird", "cat", "dog"], "sorted names")
        #expect(folder.train.count == 13 && folder.train.skippedFiles == 2 && folder.validation.count == 12)
        #expect(folder.train.labels == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
        #expect(folder.train.files[4].hasSuffix("cat/img0.jpg") && folder.train.files[8].hasSuffix("cat/more/X.JPEG"))
        let subset = folder.train.subset(6)
        #expect(subset.count == 6 && Set(subset.labels) == [0, 1, 2], "a subset spreads over the classes")

        // The class list round-trips through classes.txt.
        let list = root.appendingPathComponent("classes.txt")
        try ImageFolder.writeClasses(folder.classes, to: list)
        #expect(try ImageFolder.readClasses(list) == folder.classes)
    }

    @Test func badLayoutsAreRefusedAtTheStart() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }
        let root = try Self.makeFolder(classes: ["a", "b"], perClass: 1)
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        // An empty class folder.
        try fm.createDirectory(at: root.appendingPathComponent("train/c"), withIntermediateDirectories: true)
        #expect(message { _ = try ImageFolder(root: root.path) }.contains("train/c has no .jpg"))
        // val's classes differ from train's.
        try fm.copyItem(at: root.appendingPathComponent("train/a/img0.jpg"), to: root.appendingPathComponent("train/c/x.jpg"))
        let differ = message { _ = try ImageFolder(root: root.path) }
        #expect(differ.contains("differ") && differ.contains("only in train: c"), "\(differ)")
        // No val/ at all.
        try fm.removeItem(at: root.appendingPathComponent("val"))
        #expect(message { _ = try ImageFolder(root: root.path) }.contains("no val/ folder"))
        #expect(message { _ = try ImageFolder(root: root.path + "/missing") }.contains("no train/ folder"))
        let error = #expect(throws: CLNetError.self) { try ImageFolder(root: root.path) }
        if case .invalidDataset? = error {} else { Issue.record("a layout error is invalidDataset, not \(String(describing: error))") }
    }

    /// The batches of a folder are the same with one worker or two, each rank's shard is its
    /// part of the whole batch, and labels follow the classes.
    @Test func loaderIsDeterministicAcrossWorkersAndShards() throws {
        let root = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let folder = try ImageFolder(root: root.path)
        let samples = ImageFolderSamples(images: folder.train, transform: try .training(size: 12))
        let one = try BatchLoader(source: samples, batchSize: 4, training: true, seed: 5, options: LoaderOptions(workers: 1))
        let two = try BatchLoader(source: samples, batchSize: 4, training: true, seed: 5, options: LoaderOptions(workers: 2, ahead: 3))
        #expect(one.batchesPerEpoch == 3)
        for epoch in 0..<2 {
            for index in 0..<3 {
                let a = try one.batch(epoch: epoch, index: index), b = try two.batch(epoch: epoch, index: index)
                #expect(a.inputs == b.inputs && a.labels == b.labels && a.inputs.count == 4 * 3 * 12 * 12)
                #expect(!a.inputs.contains { !$0.isFinite })
            }
        }
        // Out of order (as a resume asks): the same batch again.
        let again = try two.batch(epoch: 1, index: 1)
        #expect(again.inputs == (try one.batch(epoch: 1, index: 1)).inputs)
        // A shard prepares its places and leaves the others zero.
        let sharded = try BatchLoader(source: samples, batchSize: 4, training: true, seed: 5, options: LoaderOptions(workers: 2))
        sharded.shard = 2..<4
        let part = try sharded.batch(epoch: 0, index: 1), whole = try one.batch(epoch: 0, index: 1)
        let per = 3 * 12 * 12
        #expect(Array(part.inputs[(2 * per)...]) == Array(whole.inputs[(2 * per)...]))
        #expect(part.inputs[..<(2 * per)].allSatisfy { $0 == 0 } && part.labels == whole.labels)
        // Evaluation batches are in order, the last padded.
        let eval = try BatchLoader(source: ImageFolderSamples(images: folder.validation, transform: try .evaluation(size: 12)),
                                   batchSize: 5, training: false, seed: 0)
        #expect(eval.batchesPerEpoch == 3)
        let last = try eval.batch(epoch: 3, index: 2)
        #expect(last.count == 2 && last.labels == [2, 2, 2, 2, 2])
    }

    /// A corrupt image stops the loader with its name; with skipBadImages it is replaced by the
    /// next good one and reported for its epoch.
    @Test func badImagesStopOrAreSkipped() throws {
        let root = try Self.makeFolder(perClass: 2)
        defer { try? FileManager.default.removeItem(at: root) }
        let bad = root.appendingPathComponent("train/cat/img1.png")
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3]).write(to: bad)
        let folder = try ImageFolder(root: root.path)
        let samples = ImageFolderSamples(images: folder.train, transform: try .training(size: 8))
        let strict = try BatchLoader(source: samples, batchSize: 6, training: true, seed: 1)
        do {
            _ = try strict.batch(epoch: 0, index: 0)
            Issue.record("a corrupt image went through")
        } catch {
            #expect("\(error)".contains(bad.path), "\(error)")
        }
        let lenient = try BatchLoader(source: samples, batchSize: 6, training: true, seed: 1,
                                      options: LoaderOptions(skipBadImages: true))
        let b = try lenient.batch(epoch: 0, index: 0)
        #expect(b.count == 6 && !b.inputs.contains { !$0.isFinite })
        #expect(lenient.skippedFiles(epoch: 0) == [bad.path])
        // Each epoch meets the file again (the loader works ahead, so the next one may have
        // already); an epoch not yet reached has nothing.
        _ = try lenient.batch(epoch: 1, index: 0)
        #expect(lenient.skippedFiles(epoch: 1) == [bad.path] && lenient.skippedFiles(epoch: 9).isEmpty)
    }

    /// `clnet train` on an image folder writes classes.txt beside the checkpoint; `clnet predict`
    /// names the classes from it. A corrupt file stops training with its name unless skipped.
    @Test func trainThenPredict() throws {
        let root = try Self.makeFolder(perClass: 4, size: 24)
        defer { try? FileManager.default.removeItem(at: root) }
        let out = root.appendingPathComponent("run")
        let arguments = ["train", "--data", "imagefolder:\(root.path)", "--model", "resnet:block=basic,layers=1.1,width=8",
                         "--image-size", "16", "--batch-size", "4", "--epochs", "1", "--workers", "2", "--output", out.path]
        let r = try runTool("clnet", arguments)
        try #require(r.status == 0, "\(r.stderr)")
        #expect(try ImageFolder.readClasses(out.appendingPathComponent("classes.txt")) == ["bird", "cat", "dog"])
        let p = try runTool("clnet", ["predict", "--model", "resnet:block=basic,layers=1.1,width=8", "--image-size", "16",
                                      "--weights", out.appendingPathComponent("model.safetensors").path, "--top", "3",
                                      root.appendingPathComponent("val/cat/img0.jpg").path])
        #expect(p.status == 0, "\(p.stderr)")
        let text = String(decoding: p.stdout, as: UTF8.self)
        #expect(["bird (0)", "cat (1)", "dog (2)"].allSatisfy { text.contains($0) }, "\(text)")

        // Stopped after one of the three steps and resumed: the same weights, bit for bit.
        let split = root.appendingPathComponent("split")
        let first = try runTool("clnet", arguments + ["--output", split.path, "--max-steps", "1"])
        try #require(first.status == 0, "\(first.stderr)")
        let resumed = try runTool("clnet", arguments + ["--output", split.path, "--resume"])
        try #require(resumed.status == 0, "\(resumed.stderr)")
        #expect(try Data(contentsOf: split.appendingPathComponent("model.safetensors"))
                == Data(contentsOf: out.appendingPathComponent("model.safetensors")), "a resumed run ends with the same weights")

        let bad = root.appendingPathComponent("train/dog/img3.png")
        try Data("broken".utf8).write(to: bad)
        let stopped = try runTool("clnet", arguments + ["--output", root.appendingPathComponent("run2").path])
        #expect(stopped.status != 0 && stopped.stderr.contains(bad.path), "\(stopped.stderr)")
        let skipped = try runTool("clnet", arguments + ["--output", root.appendingPathComponent("run3").path, "--skip-bad-images"])
        #expect(skipped.status == 0, "\(skipped.stderr)")
        #expect(String(decoding: skipped.stdout, as: UTF8.self).contains("skipped 1 unreadable training image: \(bad.path)"))
    }
}
