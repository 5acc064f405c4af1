import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on an image data set; with no arguments, ResNet-20 on Fashion-MNIST for one epoch.",
        discussion: """
            Writes to --output: checkpoint.safetensors after every epoch (and every --checkpoint-every steps), \
            model.safetensors (the final weights, loadable by torchvision's load_state_dict), metrics.jsonl (one JSON \
            object per logged interval and per epoch) and chart.svg (training loss and test accuracy). Every file is \
            written atomically. --resume continues from the checkpoint exactly as if the run had not stopped.
            """)

    @Option(help: "A model name or specification (see `clnet models`); channels and classes come from the data (default: the model of --weights, else resnet20).")
    var model: String?

    @Option(help: "fashion-mnist[:DIR], mnist:DIR, cifar10:DIR, cifar100:DIR, or imagefolder:DIR (DIR/train/<class>/*.jpg|png and DIR/val/<class>/...).")
    var data = "fashion-mnist"

    @OptionGroup var image: ImageOptions

    @OptionGroup var taskOptions: TaskOptions

    @Option(help: "Threads that decode and augment images (default: the number of cores).")
    var workers: Int?

    @Flag(help: "Image folders: skip an image that cannot be decoded, and report it at the end of the epoch, instead of stopping.")
    var skipBadImages = false

    @Option(help: "Epochs to train.")
    var epochs = 1

    @Option(help: "Images per step.")
    var batchSize = 128

    @Option(name: .customLong("lr"), help: "Base learning rate.")
    var learningRate = 0.1

    @Option(help: "SGD momentum.")
    var momentum = 0.9

    @Flag(help: "Nesterov momentum.")
    var nesterov = false

    @Option(help: "Weight decay.")
    var weightDecay = 5e-4

    @Flag(help: "Decay norms and biases too (default: only convolution and linear weights).")
    var decayAll = false

    @Option(help: "constant, cosine, step:EPOCHS[:GAMMA] or multistep:E1.E2[:GAMMA].")
    var schedule = "cosine"

    @Option(help: "Epochs of linear learning-rate warm-up (fractions allowed).")
    var warmupEpochs = 0.0

    @Option(help: "Label smoothing of the cross-entropy.")
    var labelSmoothing = 0.0

    @Option(help: "Stochastic depth: the last residual block's drop probability, decaying linearly to the first (0: off).")
    var stochasticDepth = 0.0

    @Flag(help: "Start each residual branch's last norm at zero.")
    var zeroInitResidual = false

    @Option(help: "Partially linear networks: an L1 prior of this weight pulls every PReLU slope to 1 (act=prelu models); each epoch reports the linear channels and the average path length.")
    var linearityPrior: Double?

    @Option(name: .customLong("init"), help: "Data-dependent initialisation after the model's own: default, autoinit (AutoInit: each layer's weights scaled for unit output variance from the data's statistics) or gradinit (GradInit: a learned scale per weight and bias tensor).")
    var initialization = InitializationMethod.standard

    @Option(help: "GradInit's iterations (3 or 4 forward and backward passes each).")
    var gradinitSteps: Int?

    @Option(help: "Seed of initialisation, data order, augmentation and dropout.")
    var seed: UInt64 = 0

    @Option(help: "Where the checkpoint, metrics and chart go.")
    var output = "clnet-train"

    @Flag(help: "Continue from OUTPUT/checkpoint.safetensors.")
    var resume = false

    @Option(help: "Also write the checkpoint every N steps (0: only after each epoch).")
    var checkpointEvery = 0

    @Option(help: "Stop after this many steps in all (for quick checks); the run can be resumed later.")
    var maxSteps: Int?

    @Option(help: "Train on the first N training images only (of an image folder: N spread evenly over its sorted files, so every class is in).")
    var trainSubset: Int?

    @Option(help: "Evaluate on the first N test images only (of an image folder: N spread evenly over val/).")
    var testSubset: Int?

    @OptionGroup var device: DeviceOption

    @Option(help: "Data parallel in this process: device indices or names, comma-separated (e.g. 0,1), one replica each; every batch is split evenly across them.")
    var devices: String?

    @Flag(help: "Data parallel across processes through MPI: start with mpirun -np N clnet train --distributed ...; every rank runs one replica (on --device, else its local rank's device) and rank 0 writes the output.")
    var distributed = false

    @Flag(name: .customLong("sync-bn"), help: "With --distributed: batch norm uses the statistics of the whole batch across the ranks (PyTorch's SyncBatchNorm) instead of each rank's own.")
    var syncBatchNorm = false

    @Option(help: "Start from these weights (or a checkpoint's) instead of the initialisation: fine-tuning, e.g. after `clnet prune`.")
    var weights: String?

    @Option(help: "Distil from a teacher: [SPEC:]WEIGHTS.safetensors (e.g. resnet56:teacher/model.safetensors; SPEC may be left out when the weights record it).")
    var teacher: String?

    @Option(help: "Distillation temperature T (with --teacher).")
    var kdTemperature = 4.0

    @Option(help: "Distillation: the soft targets' weight a in [0, 1]; the labels get 1 - a (with --teacher).")
    var kdWeight = 0.9

    @Option(help: "When a step's loss is NaN or infinite: stop (the checkpoints stay as they were), or skip (undo the step, halve the learning rate, go on).")
    var onDivergence = "stop"

    @Option(help: "How activations and their gradients are stored: fp32, fp16 (with dynamic loss scaling) or bf16; arithmetic, weights, momentum and norm statistics stay float32.")
    var precision: Precision = .fp32

    @Option(help: "The dtype of model.safetensors: f32, f16 or bf16 (the checkpoint stays float32).")
    var saveDtype: SaveDtype = .f32

    func run() throws {
        var communicator: MPICommunicator? = nil
        do {
            if distributed { communicator = try MPICommunicator() }
            try execute(communicator)
            communicator?.finalize()
        } catch {
            if let communicator {
                // The other ranks would wait for this one until their timeout: stop them now.
                printError("clnet: error: rank \(communicator.rank): \(error)")
                communicator.abort(1)
            }
            throw fail(error)
        }
    }

    private func execute(_ communicator: MPICommunicator?) throws {
        // Rank 0 speaks and writes; the other ranks train beside it in silence.
        let leader = (communicator?.rank ?? 0) == 0
        // Options first: a mistake in one must not cost loading the data or touch the output.
        guard let policy = DivergencePolicy(rawValue: onDivergence) else {
            throw CLNetError.invalidArgument("--on-divergence must be stop or skip, not '\(onDivergence)'")
        }
        if let maxSteps, maxSteps <= 0 { throw CLNetError.invalidArgument("--max-steps must be positive, not \(maxSteps)") }
        guard checkpointEvery >= 0 else {
            throw CLNetError.invalidArgument("--checkpoint-every must be 0 (after each epoch only) or positive, not \(checkpointEvery)")
        }
        let dir = URL(fileURLWithPath: output)
        let checkpoint = dir.appendingPathComponent("checkpoint.safetensors")
        if resume && !FileManager.default.fileExists(atPath: checkpoint.path) {
            throw CLNetError.invalidArgument("--resume: there is no \(checkpoint.path); train without --resume to start a run there")
        }
        if let weights, !FileManager.default.fileExists(atPath: weights) {
            throw CLNetError.invalidArgument("--weights: there is no file \(weights)")
        }
        if let workers, workers <= 0 { throw CLNetError.invalidArgument("--workers must be positive, not \(workers)") }
        let (train, test, classNames) = taskOptions.task == .classify ? try samples(try DataSource(parsing: data))
            : try taskSamples()
        // Weights from CLNet (a pruned model, say) say which model they hold.
        let start = try weights.map { try LoadedWeights($0) }
        // The record's network, without its data's channels and classes or its run's stochastic
        // depth: those come from this run, and weights for other classes are refused as before.
        let chosen = try start.map { try WeightsInfo.removing(["channels", "classes", "stochastic_depth"], from: $0.model(model)) }
            ?? model ?? "resnet20"
        var config = TrainingConfiguration(model: chosen)
        config.epochs = epochs
        config.batchSize = batchSize
        config.learningRate = learningRate
        config.momentum = momentum
        config.nesterov = nesterov
        config.weightDecay = weightDecay
        config.decayOnlyWeights = !decayAll
        config.schedule = schedule
        config.warmupEpochs = warmupEpochs
        config.labelSmoothing = labelSmoothing
        config.stochasticDepth = stochasticDepth
        config.zeroInitResidual = zeroInitResidual
        config.linearityPrior = linearityPrior
        config.initialization = initialization == .standard ? nil : initialization
        config.gradInitSteps = gradinitSteps
        config.seed = seed
        config.precision = precision == .fp32 ? nil : precision
        config.initialWeights = weights
        if let teacher {
            config.teacher = teacher
            config.distillationTemperature = kdTemperature
            config.distillationWeight = kdWeight
        }
        var replicaDevices: [Device] = try devices.map { list throws(CLNetError) in
            try list.split(separator: ",").map { spec throws(CLNetError) in try Device.select(String(spec)) }
        } ?? []
        if devices != nil && replicaDevices.isEmpty { throw CLNetError.invalidArgument("--devices needs at least one device, e.g. 0,1") }
        if replicaDevices.isEmpty {
            if device.name != nil {
                replicaDevices = [try device.select()]
            } else if let communicator, ProcessInfo.processInfo.environment["CLNET_DEVICE"] == nil {
                // One rank per device: a machine's ranks take its devices of the default kind in turn.
                let all = try Device.all(), kind = try Device.default.info.type
                let same = all.filter { $0.info.type == kind }
                let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_RANK"] ?? "") ?? communicator.rank
                replicaDevices = [same[local % same.count]]
            } else {
                replicaDevices = [try Device.default]
            }
        }
        var contexts: [Context] = []
        for d in replicaDevices { contexts.append(try Context(device: d)) }
        let dev = replicaDevices[0]
        if syncBatchNorm && communicator == nil {
            throw CLNetError.invalidArgument("--sync-bn synchronises batch norm across MPI ranks: use it with --distributed")
        }
        if policy == .skip && (contexts.count > 1 || communicator != nil) {
            throw CLNetError.invalidArgument("--on-divergence skip runs on one device; drop --devices / --distributed or use stop")
        }
        let trainer = try Trainer(configuration: config, train: train, test: test, context: contexts[0],
                                  replicaContexts: Array(contexts.dropFirst()), communicator: communicator,
                                  synchronizedBatchNorm: syncBatchNorm,
                                  loading: LoaderOptions(workers: workers, skipBadImages: skipBadImages), resuming: resume)
        trainer.divergencePolicy = policy
        trainer.weightsInfo.dataset = data
        try communicator?.agree(on: "CLNet \(CLNet.version) \(trainer.modelSpec) \(config) \(data) sync-bn \(syncBatchNorm)",
                                summary: "CLNet \(CLNet.version), \(trainer.modelSpec) on \(data)")
        if leader {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw CLNetError.invalidArgument("cannot create \(output): \(error)")
            }
        }
        if leader, let classNames {
            // Beside the checkpoint, where `clnet predict` looks for the names of the classes.
            let list = dir.appendingPathComponent("classes.txt")
            if resume, FileManager.default.fileExists(atPath: list.path), try ImageFolder.readClasses(list) != classNames {
                throw CLNetError.invalidDataset("""
                    --resume: the classes of \(data) are not those of \(list.path), which the run was trained with; \
                    resume on the same folder, or start a new run
                    """)
            }
            try ImageFolder.writeClasses(classNames, to: list)
        }
        let metrics = dir.appendingPathComponent("metrics.jsonl")
        if resume {
            try trainer.loadCheckpoint(from: checkpoint)
        } else if leader {
            try? FileManager.default.removeItem(at: metrics)
        }
        let log = ProgressLog(terminal: isatty(1) == 1 && leader, silent: !leader)
        let parallel = trainer.shards > 1
            ? "; data parallel over \(contexts.count) device\(contexts.count == 1 ? "" : "s")\(communicator.map { " x \($0.size) ranks" } ?? ""), \(batchSize / trainer.shards) images each"
            : ""
        if leader { print("""
            training \(trainer.modelSpec) on \(data) (\(train.count) images, \(test.count) for testing) on \(dev.info.name)
            \(trainer.stepsPerEpoch) steps of \(batchSize) per epoch, \(epochs) epoch\(epochs == 1 ? "" : "s"), \
            schedule \(schedule) from \(learningRate)\(resume ? ", resumed at step \(trainer.step)" : "")\(parallel); writing to \(output)/
            """) }
        if leader, let report = trainer.initializationReport { print(report) }
        flushOutput()
        let started = ContinuousClock.now
        while trainer.epoch < epochs {
            if let maxSteps, trainer.step >= maxSteps { break }
            let epoch = trainer.epoch
            var limit = trainer.stepsPerEpoch - trainer.step % trainer.stepsPerEpoch
            if let maxSteps { limit = min(limit, maxSteps - trainer.step) }
            if checkpointEvery > 0 { limit = min(limit, checkpointEvery - trainer.step % checkpointEvery) }
            let interval = max(1, trainer.stepsPerEpoch / 20)
            var window: [Float] = []
            let summary = try trainer.trainEpoch(limit: limit) { p in
                window.append(p.stepLoss)
                log.step(p)
                if leader && (p.step % interval == 0 || p.step == p.stepsInEpoch) {
                    let mean = Double(window.reduce(0, +)) / Double(max(window.count, 1))
                    appendJSONLine(metrics, TrainRecord(epoch: Double(p.epoch) + Double(p.step) / Double(p.stepsInEpoch),
                                                        step: p.epoch * p.stepsInEpoch + p.step, loss: mean,
                                                        accuracy: p.accuracy, learningRate: p.learningRate,
                                                        imagesPerSecond: p.imagesPerSecond))
                    window = []
                }
            }
            let finished = trainer.epoch > epoch
            if finished, !leader, let communicator {
                // Each rank decodes its own part of every batch, so each reports what it skipped.
                reportSkipped(trainer.trainLoader.skippedFiles(epoch: epoch), "training", epoch, rank: communicator.rank)
            }
            if finished && leader {
                log.end()
                reportSkipped(trainer.trainLoader.skippedFiles(epoch: epoch), "training", epoch, rank: nil)
                let evaluation = try trainer.evaluate()
                if let t = trainer.testLoader { reportSkipped(t.skippedFiles(epoch: 0), "test", epoch, rank: nil) }
                print("epoch \(epoch + 1)/\(epochs): train loss \(format(summary.loss, 4)), accuracy \(format(summary.accuracy * 100, 2))%, "
                      + "\(format(summary.imagesPerSecond, 1)) images/s | test \(taskOptions.describe(evaluation)) "
                      + "| \(format(seconds(since: started), 1)) s")
                if let scaler = trainer.executor.lossScaler {
                    print("  fp16 loss scale \(format(Double(scaler.scale), 0)); \(scaler.skippedSteps) step\(scaler.skippedSteps == 1 ? "" : "s") skipped for overflow so far")
                }
                let paths = try trainer.pathLength()
                if let paths {
                    print("  PReLU: \(paths.linearChannels) of \(paths.preluChannels) channels linear; "
                          + "average path length \(format(paths.average, 2)) nonlinearities")
                }
                flushOutput()
                appendJSONLine(metrics, EpochRecord(epoch: epoch + 1, step: trainer.step, trainLoss: summary.loss,
                                                    trainAccuracy: summary.accuracy, testLoss: evaluation.loss,
                                                    testTop1: evaluation.top1, testTop5: evaluation.top5,
                                                    seconds: seconds(since: started), pathLength: paths, testPSNR: evaluation.psnr,
                                                    testSSIM: evaluation.ssim, bicubicPSNR: evaluation.bicubicPSNR,
                                                    testMeanIoU: evaluation.meanIoU))
            }
            if leader { try trainer.saveCheckpoint(to: checkpoint) }
        }
        log.end()
        if let communicator {
            // Equal digests on every rank: bitwise-equal weights.
            let hash = try trainer.executor.parameterDigest()
            print("rank \(communicator.rank) of \(communicator.size): weights digest \(String(hash, radix: 16))")
            flushOutput()
        }
        guard leader else { return }
        if trainer.shards > 1 {
            let total = seconds(since: started)
            func share(_ t: Double) -> String { "\(format(t, 2)) s (\(format(t / max(total, 1e-9) * 100, 1))%)" }
            print("""
                of \(format(total, 2)) s: waiting for gradients \(share(trainer.gradientReadSeconds)), \
                all-reduce across ranks \(share(trainer.allReduceSeconds)), summing and writing back \(share(trainer.gradientWriteSeconds))
                """)
        }
        try trainer.saveWeights(to: dir.appendingPathComponent("model.safetensors"), dtype: saveDtype.precision)
        try writeChart(metrics: metrics, to: dir.appendingPathComponent("chart.svg"), title: "\(trainer.modelSpec) on \(data)")
        print("checkpoint: \(checkpoint.path)\nweights:    \(dir.appendingPathComponent("model.safetensors").path)")
        print("metrics:    \(metrics.path)\nchart:      \(dir.appendingPathComponent("chart.svg").path)")
    }
}

extension Train {
    /// The training and test samples of a task beyond classification; the test images are
    /// normalised as the training images are.
    func taskSamples() throws -> (any SampleSource, any SampleSource, [String]?) {
        let source = try DataSource(parsing: data)
        let train = try taskOptions.samples(source, train: true, count: trainSubset, image: image)
        let test = try taskOptions.samples(source, train: false, count: testSubset, image: image, normalization: train.normalization)
        return (train, test, nil)
    }

    /// The training and test samples of `source`, and the class names of an image folder.
    func samples(_ source: DataSource) throws -> (any SampleSource, any SampleSource, [String]?) {
        if case let .imageFolder(root) = source {
            let folder = try ImageFolder(root: root)
            let skipped = folder.train.skippedFiles + folder.validation.skippedFiles
            if skipped > 0 {
                print("\(root): \(skipped) file\(skipped == 1 ? "" : "s") not named .jpg, .jpeg or .png left out")
            }
            let train = ImageFolderSamples(images: trainSubset.map { folder.train.subset($0) } ?? folder.train,
                                           transform: try image.training())
            let test = ImageFolderSamples(images: testSubset.map { folder.validation.subset($0) } ?? folder.validation,
                                          transform: try image.evaluation())
            return (train, test, folder.classes)
        }
        guard !image.given, !skipBadImages else {
            throw CLNetError.invalidArgument("""
                --image-size, --mean, --std and --skip-bad-images are for image folders; \(data) keeps its images' size and \
                is normalised with its training split's statistics
                """)
        }
        var train = try source.load(train: true), test = try source.load(train: false)
        if let n = trainSubset { train = train.prefix(n) }
        if let n = testSubset { test = test.prefix(n) }
        let stats = train.channelStatistics()
        let prep = Preprocessing(mean: stats.mean, std: stats.std, cropPadding: source.augments ? 4 : 0, horizontalFlip: source.augments)
        return (try InMemorySamples(data: train, preprocessing: prep), try InMemorySamples(data: test, preprocessing: prep), nil)
    }

    /// The end-of-epoch report of images `--skip-bad-images` left out.
    /// The ranks of a distributed run but 0 write theirs to standard error, with their rank.
    func reportSkipped(_ files: [String], _ split: String, _ epoch: Int, rank: Int?) {
        guard !files.isEmpty else { return }
        let shown = files.prefix(5).joined(separator: ", ") + (files.count > 5 ? ", ..." : "")
        let line = "epoch \(epoch + 1): skipped \(files.count) unreadable \(split) image\(files.count == 1 ? "" : "s"): \(shown)"
        if let rank { printError("clnet: rank \(rank): \(line)") } else { print(line) }
    }
}

/// One line per logged interval of training.
struct TrainRecord: Codable {
    var kind = "train"
    var epoch: Double
    var step: Int
    var loss: Double
    var accuracy: Double
    var learningRate: Double
    var imagesPerSecond: Double
}

/// One line per finished epoch.
struct EpochRecord: Codable {
    var kind = "epoch"
    var epoch: Int
    var step: Int
    var trainLoss: Double
    var trainAccuracy: Double
    var testLoss: Double
    var testTop1: Double
    var testTop5: Double
    var seconds: Double
    /// For models with PReLUs: linear channels and the average path length.
    var pathLength: PathLength?
    /// Super-resolution and segmentation's own measures (see `Evaluation`).
    var testPSNR: Double?, testSSIM: Double?, bicubicPSNR: Double?, testMeanIoU: Double?
}

/// A progress bar on a terminal, redrawn in place; plain lines every tenth of an epoch otherwise.
final class ProgressLog {
    let terminal: Bool
    /// Prints nothing (the ranks of a distributed run but 0).
    let silent: Bool
    private var drawn = false

    init(terminal: Bool, silent: Bool = false) {
        self.terminal = terminal
        self.silent = silent
    }

    func step(_ p: StepProgress) {
        if silent { return }
        let eta = Int(p.secondsLeft.rounded())
        let text = "epoch \(p.epoch + 1) \(p.step)/\(p.stepsInEpoch) loss \(format(p.loss, 4)) acc \(format(p.accuracy * 100, 2))% "
            + "\(format(p.imagesPerSecond, 1)) img/s lr \(format(p.learningRate, 4)) ETA \(eta / 60):\(String(format2: eta % 60))"
            + (p.dataWaitSeconds >= 0.05 ? " | data wait \(format(p.dataWaitSeconds, 1)) s\(p.waitedForData ? " (waiting)" : "")" : "")
        if terminal {
            let width = 24, filled = width * p.step / max(p.stepsInEpoch, 1)
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            print("\r[\(bar)] \(text)\u{1B}[K", terminator: "")
            drawn = true
            flushOutput()
        } else if p.step % max(1, p.stepsInEpoch / 10) == 0 || p.step == p.stepsInEpoch {
            print(text)
            flushOutput()
        }
    }

    func end() {
        if drawn { print("") }
        drawn = false
    }
}

extension String {
    init(format2 value: Int) { self = value < 10 ? "0\(value)" : "\(value)" }
}

/// Appends one JSON object as a line (metrics are a log: each line is written whole with one
/// write). A failure is reported on standard error and training goes on: losing a metrics line
/// is better than losing the run.
func appendJSONLine<T: Encodable>(_ url: URL, _ value: T) {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys]
    guard var bytes = try? [UInt8](encoder.encode(value)) else { return }
    bytes.append(UInt8(ascii: "\n"))
    let fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    let written = fd < 0 ? -1 : bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if fd >= 0 { close(fd) }
    if written != bytes.count {
        printError("clnet: warning: cannot append to \(url.path): \(String(cString: strerror(errno)))")
    }
}

/// `--init default|autoinit|gradinit`.
extension InitializationMethod: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// `--save-dtype`: safetensors' names for the formats.
enum SaveDtype: String, ExpressibleByArgument, CaseIterable {
    case f32, f16, bf16
    var precision: Precision { self == .f32 ? .fp32 : self == .f16 ? .fp16 : .bf16 }
}
