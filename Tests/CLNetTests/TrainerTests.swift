import CLNet
import Foundation
import Testing

@Suite("Trainer: training, checkpoints, resume")
struct TrainerTests {
    static func config(_ model: String = "cifar_resnet:depth=8", batch: Int = 16) -> TrainingConfiguration {
        var c = TrainingConfiguration(model: model)
        c.batchSize = batch
        c.epochs = 2
        c.learningRate = 0.05
        c.schedule = "cosine"
        c.warmupEpochs = 0.5
        c.labelSmoothing = 0.1
        c.nesterov = true
        c.seed = 11
        c.evalBatchSize = 24
        return c
    }

    static func data(_ count: Int, seed: UInt64) throws -> ImageDataset {
        let dir = try temporaryDirectory("trainer-data")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeSyntheticIDX(dir, count: count, seed: seed)
        return try DataSource(parsing: "mnist:\(dir.path)").load(train: true)
    }

    /// Top-k counts a tie for the first maximum only: a Fixup model starts with a zero classifier,
    /// so all its logits are equal, and it is right exactly for the samples of class 0 (about
    /// 1 in 10), not for all of them; top-5 for those of classes 0 to 4.
    @Test func tiedLogitsAreNotAllCorrect() throws {
        let test = try Self.data(60, seed: 41)
        let trainer = try Trainer(configuration: Self.config("cifar_resnet:depth=8,norm=none"), train: try Self.data(32, seed: 42),
                                  test: test, context: try Shared.context())
        let e = try trainer.evaluate()
        let labels = test.labels.map(Int.init)
        #expect(e.samples == 60)
        #expect(e.top1 == Double(labels.filter { $0 == 0 }.count) / 60, "top-1 \(e.top1)")
        #expect(e.top5 == Double(labels.filter { $0 < 5 }.count) / 60, "top-5 \(e.top5)")
        #expect(e.top1 < 0.5)
        // The rank behind it: the logits above the label, and the equal ones before it.
        #expect(SoftmaxCrossEntropy.rank(ofLabel: 2, in: [1.0, 1, 1, 1]) == 2)
        #expect(SoftmaxCrossEntropy.rank(ofLabel: 0, in: [1.0, 1, 1, 1]) == 0)
        #expect(SoftmaxCrossEntropy.rank(ofLabel: 1, in: [0.5, 2, 2, 3]) == 1)
        #expect(SoftmaxCrossEntropy.rank(ofLabel: 2, in: [0.5, 2, 2, 3]) == 2)
        #expect(Reference.softmaxCrossEntropy([1, 1, 1, 1, 1, 1], batch: 2, labels: [0, 1]).correct == 1)
    }

    /// A student distils from a teacher's saved weights (a chain: the student could teach the
    /// next): its loss is finite, and a checkpoint resumes with the teacher in its configuration.
    @Test func distillationTrainsAStudent() throws {
        let train = try Self.data(64, seed: 31), test = try Self.data(30, seed: 32)
        let context = try Shared.context()
        let dir = try temporaryDirectory("distillation")
        defer { try? FileManager.default.removeItem(at: dir) }
        let teacherWeights = dir.appendingPathComponent("teacher.safetensors")
        let teacher = try Trainer(configuration: Self.config("cifar_resnet:depth=14"), train: train, test: test, context: context)
        _ = try teacher.trainEpoch()
        try teacher.executor.save(to: teacherWeights)
        var config = Self.config()
        config.teacher = "cifar_resnet:depth=14:\(teacherWeights.path)"
        config.distillationTemperature = 3
        config.distillationWeight = 0.7
        let student = try Trainer(configuration: config, train: train, test: test, context: context)
        #expect(student.executor.graph.inputs.map(\.name) == ["input", "teacher"])
        let losses = try student.trainEpoch().stepLosses
        #expect(losses.count == 4 && losses.allSatisfy(\.isFinite), "\(losses)")
        #expect(try student.evaluate().top1 >= 0)
        var wrong = config
        wrong.teacher = "cifar_resnet:depth=14"
        let e = #expect(throws: CLNetError.self) { try Trainer(configuration: wrong, train: train, test: test, context: context) }
        #expect("\(e!)".contains("SPEC:WEIGHTS.safetensors"))
    }

    /// Partially linear networks: a strong linearity prior makes every PReLU slope exactly 1
    /// within an epoch, and the path length then counts no nonlinearity; without the prior the
    /// slopes stay nonlinear. A model without PReLUs is refused.
    @Test func linearityPriorMakesPReLUChannelsLinear() throws {
        let train = try Self.data(64, seed: 41)
        let context = try Shared.context()
        var config = Self.config("cifar_resnet:depth=8,act=prelu")
        config.epochs = 1
        let plain = try Trainer(configuration: config, train: train, test: nil, context: context)
        _ = try plain.trainEpoch()
        let before = try #require(try plain.pathLength())
        // A stem PReLU, and per block half a PReLU in the branch and one after the addition.
        #expect(before.linearChannels == 0 && abs(before.average - 5.5) < 1e-12, "\(before)")
        config.linearityPrior = 100
        let pulled = try Trainer(configuration: config, train: train, test: nil, context: context)
        #expect(pulled.executor.linearityPrior == 100)
        let losses = try pulled.trainEpoch().stepLosses
        #expect(losses.count == 4 && losses.allSatisfy { $0.isFinite })
        let after = try #require(try pulled.pathLength())
        #expect(after == PathLength(average: 0, linearChannels: before.preluChannels, preluChannels: before.preluChannels))
        var none = Self.config()
        none.linearityPrior = 1
        let e = #expect(throws: CLNetError.self) { try Trainer(configuration: none, train: train, test: nil, context: context) }
        #expect("\(e!)".contains("act=prelu"))
    }

    /// Four steps straight, or two, a checkpoint, a new trainer from it, and two more: the same
    /// losses and weights, bit for bit.
    @Test func resumeEqualsUninterrupted() throws {
        let train = try Self.data(64, seed: 5), test = try Self.data(30, seed: 6)
        let context = try Shared.context()
        let whole = try Trainer(configuration: Self.config(), train: train, test: test, context: context)
        #expect(whole.stepsPerEpoch == 4)
        var straight = try whole.trainEpoch().stepLosses
        straight += try whole.trainEpoch(limit: 2).stepLosses

        let dir = try temporaryDirectory("resume")
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoint = dir.appendingPathComponent("checkpoint.safetensors")
        let first = try Trainer(configuration: Self.config(), train: train, test: test, context: context)
        var resumed = try first.trainEpoch(limit: 3).stepLosses
        try first.saveCheckpoint(to: checkpoint)
        let second = try Trainer(configuration: Self.config(), train: train, test: test, context: context)
        try second.loadCheckpoint(from: checkpoint)
        #expect(second.step == 3 && second.epoch == 0)
        resumed += try second.trainEpoch().stepLosses
        resumed += try second.trainEpoch(limit: 2).stepLosses
        #expect(resumed == straight, "losses: \(resumed) against \(straight)")
        for p in whole.executor.graph.parameters {
            #expect(try second.executor.parameter(p.name) == whole.executor.parameter(p.name), "\(p.name)")
        }
        // The checkpoint's weights are torchvision's names, plus the optimizer under its own prefix.
        let file = try SafeTensors(contentsOf: checkpoint)
        #expect(file.entries["conv1.weight"] != nil && file.entries["bn1.num_batches_tracked"] != nil)
        #expect(file.entries["optimizer.momentum.conv1.weight"] != nil)
        // Another configuration refuses the checkpoint, naming the reason.
        var other = Self.config()
        other.learningRate = 0.2
        let mismatch = try Trainer(configuration: other, train: train, test: test, context: context)
        let error = #expect(throws: CLNetError.self) { try mismatch.loadCheckpoint(from: checkpoint) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("other settings"))
        let evaluation = try second.evaluate()
        #expect(evaluation.samples == 30 && evaluation.loss.isFinite && evaluation.top5 >= evaluation.top1)
    }

    /// fp16 training resumes exactly too: the loss scaler's state (here mid-way to a growth)
    /// travels in the checkpoint.
    @Test func fp16ResumeKeepsTheLossScale() throws {
        let train = try Self.data(64, seed: 5)
        let context = try Shared.context()
        var c = Self.config()
        c.precision = .fp16
        var scaler = LossScaler()
        scaler.growthInterval = 2
        let whole = try Trainer(configuration: c, train: train, test: nil, context: context)
        try whole.executor.setLossScaler(scaler)
        let straight = try whole.trainEpoch().stepLosses
        let grown = whole.executor.lossScaler.map { Double($0.scale) }
        #expect(grown == 262_144, "two growths in four clean steps: \(String(describing: grown))")

        let dir = try temporaryDirectory("resume-fp16")
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoint = dir.appendingPathComponent("checkpoint.safetensors")
        let first = try Trainer(configuration: c, train: train, test: nil, context: context)
        try first.executor.setLossScaler(scaler)
        var resumed = try first.trainEpoch(limit: 3).stepLosses
        try first.saveCheckpoint(to: checkpoint)
        let second = try Trainer(configuration: c, train: train, test: nil, context: context)
        try second.loadCheckpoint(from: checkpoint)
        #expect(second.executor.lossScaler == first.executor.lossScaler)
        #expect(second.executor.lossScaler?.cleanSteps == 1)
        resumed += try second.trainEpoch().stepLosses
        #expect(resumed == straight, "losses: \(resumed) against \(straight)")
        for p in whole.executor.graph.parameters {
            #expect(try second.executor.parameter(p.name) == whole.executor.parameter(p.name), "\(p.name)")
        }
        // A power-of-two scale leaves the losses alike restored or not: the scaler itself must be.
        #expect(second.executor.lossScaler == whole.executor.lossScaler)
        // An fp32 run's configuration refuses the checkpoint.
        let mismatch = try Trainer(configuration: Self.config(), train: train, test: nil, context: context)
        #expect(throws: CLNetError.self) { try mismatch.loadCheckpoint(from: checkpoint) }
    }

    /// A short run on real data: Fashion-MNIST where Debian's package is installed (CI installs
    /// it), else the synthetic set.
    @Test func lossFallsOnRealData() throws {
        let source = try DataSource(parsing: "fashion-mnist")
        let real = FileManager.default.fileExists(atPath: DataSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz")
        if !real { print("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); training on synthetic data") }
        let train = real ? try source.load(train: true).prefix(640) : try Self.data(640, seed: 9)
        var c = TrainingConfiguration(model: "cifar_resnet:depth=8")
        c.batchSize = 32
        c.epochs = 1
        c.learningRate = 0.1
        c.schedule = "constant"
        let trainer = try Trainer(configuration: c, train: train, test: nil, context: try Shared.context())
        let losses = try trainer.trainEpoch().stepLosses
        #expect(losses.count == 20 && losses.allSatisfy(\.isFinite))
        let early = losses.prefix(4).reduce(0, +) / 4, late = losses.suffix(4).reduce(0, +) / 4
        print("training on \(real ? "Fashion-MNIST" : "synthetic data"): loss \(early) over the first 4 steps, \(late) over the last 4")
        #expect(late < early * 0.8, "the loss falls: \(early) -> \(late)")
    }
}

@Suite("clnet train and clnet eval")
struct TrainCommandTests {
    static func clnet(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = productsDirectory().appendingPathComponent("clnet")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// A short run writes every file it promises, and its weights and checkpoint evaluate.
    @Test func trainWritesItsFilesAndEvalReadsThem() throws {
        let dir = try temporaryDirectory("train-command")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeSyntheticIDX(dir, count: 64, seed: 1)
        try writeSyntheticIDX(dir, count: 40, seed: 2, prefix: "t10k")
        let out = dir.appendingPathComponent("run")
        let train = try Self.clnet(["train", "--model", "cifar_resnet:depth=8", "--data", "mnist:\(dir.path)", "--batch-size", "16",
                                    "--epochs", "1", "--output", out.path])
        #expect(train.status == 0, "\(train.err)")
        #expect(train.out.contains("epoch 1/1: train loss") && train.out.contains("top-5"), "\(train.out)")
        for file in ["checkpoint.safetensors", "model.safetensors", "metrics.jsonl", "chart.svg"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), "\(file)")
        }
        let metrics = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        #expect(metrics.contains("\"kind\":\"epoch\"") && metrics.contains("\"test_top1\""))
        #expect(try String(contentsOf: out.appendingPathComponent("chart.svg"), encoding: .utf8).hasPrefix("<svg"))
        for weights in ["model.safetensors", "checkpoint.safetensors"] {
            let eval = try Self.clnet(["eval", "--model", "cifar_resnet:depth=8", "--weights", out.appendingPathComponent(weights).path,
                                       "--data", "mnist:\(dir.path)", "--batch-size", "16"])
            #expect(eval.status == 0, "\(eval.err)")
            #expect(eval.out.contains("(40 test images)") && eval.out.contains("top-1"), "\(eval.out)")
        }
        // A missing data set stops with a message naming what is missing and how to get it.
        let missing = try Self.clnet(["train", "--data", "mnist:\(dir.path)/nothing", "--output", out.path])
        #expect(missing.status != 0 && missing.err.contains("no train-images-idx3-ubyte"), "\(missing.err)")
    }
}

@Suite("Checkpoints survive kills")
struct CheckpointKillTests {
    /// Kills `clnet train`, which writes a checkpoint after every step, at random moments, and
    /// loads the checkpoint after each kill: it is always whole, one step or another.
    @Test func killedWhileWritingLeavesALoadableCheckpoint() throws {
        let dir = try temporaryDirectory("kill")
        defer { try? FileManager.default.removeItem(at: dir) }
        try writeSyntheticIDX(dir, count: 256, seed: 4)
        try writeSyntheticIDX(dir, count: 16, seed: 5, prefix: "t10k")
        let out = dir.appendingPathComponent("run")
        let checkpoint = out.appendingPathComponent("checkpoint.safetensors")
        // A model of 4.9 M parameters on 28x28 images: its steps are quick and its checkpoints
        // (39 MB with the momentum, flushed to the disk) slow, so many kills land inside a write.
        let model = "resnet:block=basic,layers=1.1.1.1"
        var rng = freshGenerator("kill test")
        var steps: Set<String> = []
        var kills = 0, midWrite = 0
        for attempt in 0..<6 {
            let process = Process()
            process.executableURL = productsDirectory().appendingPathComponent("clnet")
            process.arguments = ["train", "--model", model, "--data", "mnist:\(dir.path)", "--batch-size", "8", "--epochs", "50",
                                 "--checkpoint-every", "1", "--output", out.path] + (attempt > 0 ? ["--resume"] : [])
            process.standardOutput = Pipe()
            process.standardError = Pipe()
            let before = try? FileManager.default.attributesOfItem(atPath: checkpoint.path)[.modificationDate] as? Date
            try process.run()
            // Once this process is past its start-up (it has written a checkpoint), wait for its
            // next write to begin and kill it a random moment into it.
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline && process.isRunning {
                let now = try? FileManager.default.attributesOfItem(atPath: checkpoint.path)[.modificationDate] as? Date
                if let now, now != before { break }
                usleep(5_000)
            }
            let temporary = out.appendingPathComponent(".checkpoint.safetensors.tmp").path
            while Date() < deadline && process.isRunning && !FileManager.default.fileExists(atPath: temporary) { usleep(500) }
            usleep(UInt32.random(in: 0...30_000, using: &rng))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                kills += 1
            }
            process.waitUntilExit()
            if FileManager.default.fileExists(atPath: out.appendingPathComponent(".checkpoint.safetensors.tmp").path) { midWrite += 1 }
            let file = try SafeTensors(contentsOf: checkpoint)
            let (graph, _) = try ModelSpec.graph("\(model),channels=1,classes=10", batch: 8, size: 28)
            let executor = try Executor(graph: graph, context: try Shared.context(), training: false)
            try executor.load(file, ignoring: "optimizer.")
            steps.insert(file.metadata["clnet.checkpoint"] ?? "")
        }
        print("killed \(kills) times, \(midWrite) of them with a checkpoint half-written; every checkpoint loaded")
        #expect(kills >= 5, "the process was killed \(kills) times")
        #expect(midWrite >= 1, "no kill landed inside a write")
        #expect(steps.count > 2, "checkpoints of \(steps.count) different steps were loaded")
        // At most the one temporary file of an interrupted write is left beside the checkpoint.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.count <= 1, "\(leftovers)")
    }
}
