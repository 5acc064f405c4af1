// The training loop that programs link: a model from its specification, data, SGD with a
// schedule, evaluation, and checkpoints that resume bit for bit.

import FoundationEssentials
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Trains a model of the residual family on an image data set.
///
/// ```swift
/// let data = try DataSource(parsing: "fashion-mnist")
/// var config = TrainingConfiguration(model: "resnet20")
/// config.epochs = 1
/// let trainer = try Trainer(configuration: config, train: try data.load(train: true), test: try data.load(train: false))
/// while trainer.epoch < config.epochs {
///     let summary = try trainer.trainEpoch { print($0.loss) }
///     print(summary.loss, try trainer.evaluate().top1)
///     try trainer.saveCheckpoint(to: URL(fileURLWithPath: "checkpoint.safetensors"))
/// }
/// ```
public final class Trainer {
    public let configuration: TrainingConfiguration
    /// The model specification with the data's channels and classes filled in.
    public let modelSpec: String
    /// What the weights files this trainer writes record about their model (`WeightsInfo`):
    /// the specification, the input size, the normalisation and class names of the training
    /// data. Set `dataset` to name the data.
    public var weightsInfo: WeightsInfo
    public let trainLoader: BatchLoader
    public let testLoader: BatchLoader?
    public let schedule: LearningRateSchedule
    /// The training executor: parameters, gradients, momentum.
    public let executor: Executor
    private let evaluator: Executor?
    /// With distillation: the teacher (inference) and its logits.
    let teacher: (executor: Executor, logits: Value)?
    private let evalLogits: Value?
    var cachedBuckets: (elements: Int, buckets: [Executor.GradientBucket])?
    /// Consecutive steps `DivergencePolicy.skip` has dropped.
    var skippedInARow = 0
    /// Optimizer steps taken since the run began (across resumes).
    public internal(set) var step = 0
    /// What a step whose loss is not finite does (default: stop the run).
    public var divergencePolicy = DivergencePolicy.stop
    /// Steps in a row `DivergencePolicy.skip` drops before it gives up.
    public static let maximumSkips = 5
    /// What `--init autoinit|gradinit` did (`TrainingConfiguration.initialization`), for the log.
    public private(set) var initializationReport: String?
    /// Steps dropped by `DivergencePolicy.skip` so far.
    public internal(set) var skippedSteps = 0
    /// The schedule's rate is multiplied by this; each skipped step halves it.
    public internal(set) var learningRateScale = 1.0
    /// Data parallelism: the executors of this process (the first is `executor`), one per
    /// device, each taking an equal slice of every batch.
    public let replicas: [Executor]
    /// The other processes of a distributed run (MPI), or nil.
    public let communicator: Communicator?
    /// Gradients are reduced in buckets of about this many values, each as soon as the backward
    /// pass has finished it, while the device goes on with the layers before it.
    public var bucketElements = 1 << 20
    /// Host seconds of data-parallel steps so far spent reading gradients (waiting for the
    /// backward pass to finish each bucket), in the all-reduce across ranks (waiting for the
    /// other ranks included), and summing and writing gradients back.
    public internal(set) var gradientReadSeconds = 0.0, allReduceSeconds = 0.0, gradientWriteSeconds = 0.0
    /// All of the above.
    public var reductionSeconds: Double { gradientReadSeconds + allReduceSeconds + gradientWriteSeconds }
    /// The slices every batch is split into: replicas times ranks.
    public var shards: Int { replicas.count * (communicator?.size ?? 1) }

    public var stepsPerEpoch: Int { trainLoader.batchesPerEpoch }
    /// The epoch the next step belongs to (0-based).
    public var epoch: Int { step / stepsPerEpoch }

    /// Builds the model for an in-memory data set, initialises it from the seed, and prepares
    /// the loaders. The preprocessing defaults to the training set's own channel statistics,
    /// with CIFAR's crop and flip when `augment` is set. The rest is as the other initialiser's.
    public convenience init(configuration: TrainingConfiguration, train: ImageDataset, test: ImageDataset?, augment: Bool = false,
                            preprocessing: Preprocessing? = nil, context: Context? = nil, queues: Int? = nil,
                            replicaContexts: [Context] = [], communicator: Communicator? = nil,
                            synchronizedBatchNorm: Bool = false, loading: LoaderOptions = LoaderOptions()) throws(CLNetError) {
        if let test, (test.channels, test.height, test.width) != (train.channels, train.height, train.width) {
            throw .invalidArgument("""
                the test images are \(test.channels)x\(test.height)x\(test.width) but the training images \
                \(train.channels)x\(train.height)x\(train.width)
                """)
        }
        let stats = train.channelStatistics()
        let prep = preprocessing ?? Preprocessing(mean: stats.mean, std: stats.std, cropPadding: augment ? 4 : 0,
                                                  horizontalFlip: augment)
        try self.init(configuration: configuration, train: try InMemorySamples(data: train, preprocessing: prep),
                      test: try test.map { t throws(CLNetError) in try InMemorySamples(data: t, preprocessing: prep) },
                      context: context, queues: queues, replicaContexts: replicaContexts, communicator: communicator,
                      synchronizedBatchNorm: synchronizedBatchNorm, loading: loading)
    }

    /// Builds the model for the data, initialises it from the seed, and prepares the loaders:
    /// `train` is shuffled and augmented as its source does, `test` is read in order.
    ///
    /// Data parallelism (as PyTorch's DistributedDataParallel): with `replicaContexts`, one
    /// replica of the model per context beyond the first, and with a `communicator`, the same
    /// on every rank. Each replica takes an equal slice of every batch (so the batch size must
    /// divide by replicas times ranks), and each rank prepares only its own slices; gradients
    /// are averaged across all of them before one update, so the weights follow the
    /// single-device run of the whole batch, with batch-norm statistics per replica.
    ///
    /// `resuming`: a checkpoint will replace the weights (`loadCheckpoint`), so the
    /// configuration's data-dependent initialisation, minutes for GradInit, is not run.
    public init(configuration: TrainingConfiguration, train: any SampleSource, test: (any SampleSource)?,
                context: Context? = nil, queues: Int? = nil, replicaContexts: [Context] = [], communicator: Communicator? = nil,
                synchronizedBatchNorm: Bool = false, loading: LoaderOptions = LoaderOptions(), resuming: Bool = false) throws(CLNetError) {
        let c = configuration
        if synchronizedBatchNorm {
            // As PyTorch's SyncBatchNorm: one device per process.
            guard communicator != nil, replicaContexts.isEmpty else {
                throw .invalidArgument("synchronised batch norm runs across MPI ranks with one device each (--distributed without --devices)")
            }
        }
        let shards = (1 + replicaContexts.count) * (communicator?.size ?? 1)
        if shards > 1 {
            guard c.batchSize % shards == 0 else {
                throw .invalidArgument("the batch size \(c.batchSize) must divide by the \(shards) replicas (devices times ranks) of data-parallel training")
            }
            guard c.teacher == nil else { throw .invalidArgument("distillation (--teacher) runs on one device; drop --devices / --distributed") }
        }
        guard c.epochs > 0, c.batchSize > 0, c.evalBatchSize > 0 else {
            throw .invalidArgument("epochs, batch size and evaluation batch size must be positive")
        }
        guard c.momentum >= 0, c.momentum < 1, c.weightDecay >= 0 else {
            throw .invalidArgument("momentum must be in [0, 1) and weight decay 0 or more")
        }
        if let test, (test.channels, test.height, test.width) != (train.channels, train.height, train.width) {
            throw .invalidArgument("""
                the test images are \(test.channels)x\(test.height)x\(test.width) but the training images \
                \(train.channels)x\(train.height)x\(train.width)
                """)
        }
        self.configuration = c
        // A super-resolution model has no classes to fill.
        var fill = ["channels": "\(train.channels)"]
        if train.targetCount == 0 { fill["classes"] = "\(max(train.classes, test?.classes ?? 0))" }
        if shards > 1 && (train.targetCount > 0 || train.labelsPerSample != 1) {
            throw .invalidArgument("data-parallel training runs classification; super-resolution and segmentation run on one device")
        }
        if c.stochasticDepth > 0 { fill["stochastic_depth"] = "\(c.stochasticDepth)" }
        modelSpec = ModelSpec.filling(c.model, fill)
        weightsInfo = WeightsInfo(model: modelSpec, imageSize: train.height, mean: train.normalization?.mean,
                                  std: train.normalization?.std, classes: train.classNames)
        trainLoader = try BatchLoader(source: train, batchSize: c.batchSize, training: true, seed: c.seed, options: loading)
        if let communicator {
            // This rank's replicas take places first ..< first + replicas of each batch.
            let per = c.batchSize / shards, first = communicator.rank * (1 + replicaContexts.count) * per
            trainLoader.shard = first..<(first + (1 + replicaContexts.count) * per)
        }
        testLoader = try test.map { t throws(CLNetError) in
            try BatchLoader(source: t, batchSize: min(c.evalBatchSize, t.count), training: false, seed: c.seed, options: loading)
        }
        schedule = try LearningRateSchedule(parsing: c.schedule, base: c.learningRate, stepsPerEpoch: trainLoader.batchesPerEpoch,
                                            epochs: c.epochs, warmupEpochs: c.warmupEpochs)
        let ctx: Context
        if let context { ctx = context } else { ctx = try Context() }
        var graph = try ModelSpec.graph(modelSpec, batch: c.batchSize / shards, size: train.height).graph
        try Self.checkTask(graph, train, spec: modelSpec)
        if let teacher = c.teacher {
            let (teacherGraph, teacherLogits, file) = try Self.teacher(teacher, fill: fill, batch: c.batchSize, size: train.height)
            let t = try Executor(graph: teacherGraph, context: ctx, training: false, keep: [teacherLogits], queues: 1)
            try t.load(file, ignoring: "optimizer.")
            guard teacherGraph.shape(of: teacherLogits) == graph.shape(of: graph.nodes[graph.lossNode!].inputs[0]) else {
                throw .invalidArgument("the teacher \(teacher) predicts \(teacherGraph.shape(of: teacherLogits)) but the student \(graph.shape(of: graph.nodes[graph.lossNode!].inputs[0]))")
            }
            self.teacher = (t, teacherLogits)
            graph = try graph.distilling(Distillation(temperature: Float(c.distillationTemperature ?? 4),
                                                      weight: Float(c.distillationWeight ?? 0.9)))
        } else {
            self.teacher = nil
        }
        if c.labelSmoothing > 0 { try graph.setLabelSmoothing(Float(c.labelSmoothing)) }
        guard train.height == train.width else {
            throw .invalidArgument("images must be square, not \(train.height)x\(train.width)")
        }
        let sgd = SGD(learningRate: Float(c.learningRate), momentum: Float(c.momentum), weightDecay: Float(c.weightDecay),
                      nesterov: c.nesterov)
        var made: [Executor] = []
        for replicaContext in [ctx] + replicaContexts {
            made.append(try Executor(graph: graph, context: replicaContext, training: true, queues: queues, optimizer: sgd,
                                     decayOnlyWeights: c.decayOnlyWeights, gradientTransfers: shards > 1,
                                     precision: c.precision ?? .fp32))
        }
        if let prior = c.linearityPrior, prior != 0 {
            guard prior > 0, Float(prior).isFinite else {
                throw .invalidArgument("the linearity prior must be a positive number within float range, not \(prior)")
            }
            guard graph.parameters.contains(where: { $0.role == .slope }) else {
                throw .invalidArgument("the linearity prior pulls PReLU slopes to 1, and \(modelSpec) has none: use act=prelu")
            }
            for e in made { e.linearityPrior = Float(prior) }
        }
        if synchronizedBatchNorm { made[0].batchNormCommunicator = communicator }
        executor = made[0]
        replicas = made
        self.communicator = communicator
        if let testLoader {
            let (g, logits) = try ModelSpec.graph(modelSpec, batch: testLoader.batchSize, size: train.height, loss: false)
            evaluator = try Executor(graph: g, context: ctx, training: false, keep: [logits], queues: 1,
                                     precision: c.precision ?? .fp32)
            evalLogits = logits
        } else {
            evaluator = nil
            evalLogits = nil
        }
        try executor.initialize(seed: Self.initializationSeed(c.seed), zeroInitResidual: c.zeroInitResidual)
        if let path = c.initialWeights {
            try executor.load(try SafeTensors(contentsOf: URL(fileURLWithPath: path)), ignoring: "optimizer.")
        }
        if let method = c.initialization, method != .standard, !resuming {
            guard c.initialWeights == nil else {
                throw .invalidArgument("--init \(method.rawValue) sets the initial weights, and so do --weights; choose one")
            }
            guard shards == 1 else { throw .invalidArgument("--init \(method.rawValue) runs on one device; drop --devices / --distributed") }
            guard c.teacher == nil else {
                throw .invalidArgument("--init \(method.rawValue) initialises a model trained alone; it does not run with --teacher (distillation)")
            }
            // Its own draw of the training set, so that the run's batches stay what they were.
            let loader = try BatchLoader(source: train, batchSize: c.batchSize, training: true, seed: mix(c.seed, 3), options: loading)
            initializationReport = try Self.dataDependentInitialization(method, executor: executor, graph: graph, context: ctx,
                                                                        loader: loader, configuration: c)
        }
        try synchronizeReplicas()
    }

    /// Gives every replica the first one's parameters, statistics and momentum.
    func synchronizeReplicas() throws(CLNetError) {
        for r in replicas.dropFirst() {
            for p in executor.graph.parameters {
                try r.setParameter(p.name, try executor.parameter(p.name))
                if p.trainable { try r.setMomentum(p.name, try executor.momentum(p.name)) }
            }
            r.stepsTaken = executor.stepsTaken
        }
    }

    /// The initialisation seed a run of `seed` uses, so that a tool can draw the same start.
    public static func initializationSeed(_ seed: UInt64) -> UInt64 { mix(seed, 1) }

    /// The seed of training step `step`'s random draws (dropout, stochastic depth), from the
    /// run's seed alone, so that a resumed run draws what an uninterrupted one would.
    func stepSeed(_ step: Int) -> UInt32 { UInt32(truncatingIfNeeded: mix(configuration.seed, 2, UInt64(step))) }

    /// Trains until the end of the current epoch (or for `limit` steps, if that comes first),
    /// calling `progress` after each step with the epoch's running figures.
    @discardableResult
    public func trainEpoch(limit: Int? = nil, progress: (StepProgress) -> Void = { _ in }) throws(CLNetError) -> EpochSummary {
        let epoch = self.epoch, first = step % stepsPerEpoch
        // The correct count is of samples, or in segmentation of the pixels not ignored (counted
        // as each step is enqueued, so a pipelined step's running figure is one step behind).
        let perPixel = trainLoader.source.labelsPerSample > 1
        var labelled = 0
        func accuracy(_ correct: Int, _ steps: Int) -> Double {
            Double(correct) / Double(max(perPixel ? labelled : steps * configuration.batchSize, 1))
        }
        let last = min(stepsPerEpoch, first + (limit ?? stepsPerEpoch))
        let start = ContinuousClock.now
        var losses: [Float] = [], correct = 0, lossSum = 0.0
        // A wait of a millisecond or more means the batch was not ready when the step wanted it.
        var dataWait = 0.0, lastWait = 0.0
        // The loss of step i is read while step i + 1 runs, so the host never idles the device.
        var inFlight: (reading: LossReading, rate: Double, step: Int)? = nil
        func collect(_ reading: LossReading, _ rate: Double, _ stepNumber: Int) throws(CLNetError) {
            let (loss, right) = try reading.value()
            try collectValue(loss, right, rate, stepNumber)
        }
        func collectValue(_ loss: Float, _ right: Int, _ rate: Double, _ stepNumber: Int) throws(CLNetError) {
            guard loss.isFinite else {
                throw .diverged(step: stepNumber, loss: loss, message: """
                    training diverged: the loss of step \(stepNumber) is \(loss) (learning rate \(rate)); the checkpoints \
                    written so far are intact. Lower the learning rate, add warm-up, or skip such steps \
                    (--on-divergence skip)
                    """)
            }
            losses.append(loss)
            lossSum += Double(loss)
            correct += right
            let done = losses.count, elapsed = seconds(since: start)
            let perStep = elapsed / Double(done)
            progress(StepProgress(epoch: epoch, step: first + done, stepsInEpoch: stepsPerEpoch, loss: lossSum / Double(done),
                                  accuracy: accuracy(correct, done), stepLoss: loss,
                                  imagesPerSecond: Double(done * configuration.batchSize) / max(elapsed, 1e-9),
                                  secondsLeft: perStep * Double(last - first - done), learningRate: rate,
                                  skippedSteps: skippedSteps, dataWaitSeconds: dataWait, waitedForData: lastWait >= 1e-3))
        }
        if shards > 1 && divergencePolicy == .skip {
            throw .invalidArgument("skipping diverged steps runs on one device; data-parallel training stops instead")
        }
        for index in first..<last {
            let batch = try trainLoader.batch(epoch: epoch, index: index)
            dataWait += batch.waitSeconds
            lastWait = batch.waitSeconds
            let rate = schedule.rate(at: step) * learningRateScale
            executor.optimizer?.learningRate = Float(rate)
            let outcome = shards > 1 ? try dataParallelStep(batch, rate: rate)
                : divergencePolicy == .skip ? try checkedStep(batch, rate: rate) : try pipelinedStep(batch)
            if perPixel, !(outcome.isSkipped) { labelled += batch.labels.lazy.filter { $0 != SegmentationDataset.ignoreIndex }.count }
            switch outcome {
            case let .done(loss, right):
                try collectValue(loss, right, rate, step)
            case let .pending(reading):
                if let (r, lr, n) = inFlight { try collect(r, lr, n) }
                inFlight = (reading, rate, step)
            case .skipped:
                break
            }
        }
        if let (r, lr, n) = inFlight { try collect(r, lr, n) }
        for r in replicas { try r.synchronize() }
        let elapsed = seconds(since: start), n = max(losses.count, 1)
        return EpochSummary(epoch: epoch, steps: losses.count, loss: lossSum / Double(n),
                            accuracy: accuracy(correct, n), seconds: elapsed,
                            imagesPerSecond: Double(losses.count * configuration.batchSize) / max(elapsed, 1e-9), stepLosses: losses)
    }

    /// The current weights' path length (`Graph.pathLength`) to the logits, for a model with
    /// PReLUs; nil for one without.
    public func pathLength() throws(CLNetError) -> PathLength? {
        let g = executor.graph
        guard let loss = g.lossNode else { return nil }
        var slopes: [String: [Float]] = [:]
        for p in g.parameters where p.role == .slope { slopes[p.name] = try executor.parameter(p.name) }
        guard !slopes.isEmpty else { return nil }
        return try g.pathLength(to: g.nodes[loss].inputs[0], slopes: slopes)
    }

    /// Loss and top-1 / top-5 accuracy of the current weights on the test set (batch norm with
    /// its running statistics).
    public func evaluate() throws(CLNetError) -> Evaluation {
        guard let evaluator, let evalLogits, let testLoader else {
            throw .invalidArgument("the trainer was made without a test set")
        }
        for p in executor.graph.parameters { try evaluator.setParameter(p.name, try executor.parameter(p.name)) }
        return try Self.evaluate(evaluator, logits: evalLogits, loader: testLoader)
    }

    /// Evaluates an inference executor whose graph's logits are `logits` over every batch of `loader`.
    public static func evaluate(_ executor: Executor, logits: Value, loader: BatchLoader) throws(CLNetError) -> Evaluation {
        if loader.source.targetCount > 0 { return try evaluateSuperResolution(executor, output: logits, loader: loader) }
        if loader.source.labelsPerSample > 1 { return try evaluateSegmentation(executor, logits: logits, loader: loader) }
        let classes = executor.graph.shape(of: logits)[1]
        var loss = 0.0, top1 = 0, top5 = 0, samples = 0
        for index in 0..<loader.batchesPerEpoch {
            let batch = try loader.batch(epoch: 0, index: index)
            try executor.forward(["input": batch.inputs])
            let z = try executor.read(logits)
            for i in 0..<batch.count {
                let row = z[i * classes..<(i + 1) * classes].map(Double.init)
                let m = row.max()!
                let logSum = m + log(row.reduce(0) { $0 + exp($1 - m) })
                let label = batch.labels[i]
                guard label >= 0, label < classes else {
                    throw .invalidLabels("""
                        the test data has class \(label), but the model predicts \(classes) classes; evaluate weights \
                        trained on this data set
                        """)
                }
                loss += logSum - row[label]
                let rank = SoftmaxCrossEntropy.rank(ofLabel: label, in: row)
                if rank < 1 { top1 += 1 }
                if rank < 5 { top5 += 1 }
            }
            samples += batch.count
        }
        let n = Double(max(samples, 1))
        return Evaluation(loss: loss / n, top1: Double(top1) / n, top5: Double(top5) / n, samples: samples)
    }

    /// The teacher of `[SPEC:]WEIGHTS`: its inference graph (channels and classes filled from the
    /// data unless given), logits, and weights file.
    static func teacher(_ text: String, fill: [String: String], batch: Int, size: Int) throws(CLNetError)
        -> (Graph, Value, SafeTensors) {
        // The weights path follows the last ':' (a specification has at most one); without a
        // specification, the weights' record says the model.
        let colon = text.lastIndex(of: ":")
        let path = colon.map { String(text[text.index(after: $0)...]) } ?? text
        guard path.hasSuffix(".safetensors") else {
            throw .invalidArgument("""
                --teacher \(text) must be SPEC:WEIGHTS.safetensors, e.g. resnet56:teacher/model.safetensors (or \
                WEIGHTS.safetensors alone when the weights record their model)
                """)
        }
        let file = try SafeTensors(contentsOf: URL(fileURLWithPath: path))
        let model = try WeightsInfo.model(given: colon.map { String(text[..<$0]) }, info: try WeightsInfo.read(file, path: path), file: path)
        let spec = ModelSpec.filling(model, fill)
        let (graph, logits) = try ModelSpec.graph(spec, batch: batch, size: size, loss: false)
        return (graph, logits, file)
    }

}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}
