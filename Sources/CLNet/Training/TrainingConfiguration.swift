// The values that define and describe a training run: its configuration, what it does when
// the loss diverges, and what steps, epochs and evaluations report.

/// Everything that defines a training run; a checkpoint stores it so that `--resume` continues
/// the same run.
public struct TrainingConfiguration: Sendable, Codable, Equatable {
    /// A model name or specification (see `ModelSpec`); the input channels and class count are
    /// taken from the data unless the specification gives them.
    public var model: String
    public var batchSize = 128
    public var epochs = 1
    public var learningRate = 0.1
    public var momentum = 0.9
    public var nesterov = false
    public var weightDecay = 5e-4
    /// Apply weight decay to convolution and linear weights only, not to norms and biases.
    public var decayOnlyWeights = true
    /// `constant`, `cosine`, `step:EPOCHS[:GAMMA]` or `multistep:E1.E2[:GAMMA]`.
    public var schedule = "cosine"
    public var warmupEpochs = 0.0
    public var labelSmoothing = 0.0
    /// Stochastic depth for residual models: the last block's drop probability (0: off).
    public var stochasticDepth = 0.0
    /// Start each residual branch's last norm at zero (torchvision's `zero_init_residual`).
    public var zeroInitResidual = false
    /// Fixes initialisation, data order, augmentation and dropout: the same seed, the same run.
    public var seed: UInt64 = 0
    public var evalBatchSize = 500
    /// Knowledge distillation: the teacher as `SPEC:WEIGHTS` (a model specification and its
    /// weights file), trained on together with the labels (see `Distillation`). A teacher
    /// trained this way can teach the next student (the teacher-assistant chain of Mirzadeh et al.).
    public var teacher: String?
    /// Distillation's temperature T and the soft targets' weight a (defaults 4 and 0.9).
    public var distillationTemperature: Double?
    public var distillationWeight: Double?
    /// Start from these weights (a safetensors file of the model's parameters, or a checkpoint)
    /// instead of the initialisation: fine-tuning, e.g. after `clnet prune`.
    public var initialWeights: String?
    /// The L1 prior that pulls PReLU slopes to 1 (`Executor.linearityPrior`): partially linear
    /// networks. nil or 0: none.
    public var linearityPrior: Double?
    /// How the weights start, beyond the model's own initialisation (nil: as it is).
    public var initialization: InitializationMethod?
    /// GradInit's iterations (`GradInit.steps`; nil: its default).
    public var gradInitSteps: Int?
    /// How activations and their gradients are stored (`Precision`; nil: fp32). fp16 training
    /// scales the loss (`LossScaler`); parameters, momentum and statistics stay float32.
    public var precision: Precision?

    public init(model: String) { self.model = model }
}

/// Data-dependent initialisation, after the model's own (`clnet train --init`).
public enum InitializationMethod: String, Sendable, Codable, CaseIterable {
    /// The model's own: He, PyTorch's, Fixup's, as each model asks.
    case standard = "default"
    /// AutoInit's weight scales, from the signal's statistics (`AutoInit`).
    case autoinit
    /// GradInit's learned scale per tensor, from a few gradient steps (`GradInit`).
    case gradinit
}

/// What training does when a step's loss is not finite (NaN or infinite).
public enum DivergencePolicy: String, Sendable, CaseIterable {
    /// Stop with an error; the checkpoints written so far are left as they are.
    case stop
    /// Undo the step (weights, running statistics and momentum as before it), halve the
    /// learning rate and go on; stop when more than `Trainer.maximumSkips` steps in a row are
    /// skipped. Each step then waits for its loss before the next starts, which costs some
    /// overlap. This rides over a batch that makes the forward pass overflow; when an update has
    /// already made the weights themselves non-finite, every later step is skipped too and the
    /// run stops: resume from the last checkpoint with a lower learning rate.
    case skip
}

/// Progress within an epoch, reported after every step.
public struct StepProgress: Sendable {
    public var epoch: Int, step: Int, stepsInEpoch: Int
    /// Mean loss and top-1 accuracy over the epoch's steps so far.
    public var loss: Double, accuracy: Double
    /// This step's loss.
    public var stepLoss: Float
    public var imagesPerSecond: Double
    public var secondsLeft: Double
    public var learningRate: Double
    /// Steps skipped so far in this run because their loss was not finite (`DivergencePolicy.skip`).
    public var skippedSteps = 0
    /// Seconds of this epoch so far in which the device waited for the data pipeline, and
    /// whether the latest step's batch was late.
    public var dataWaitSeconds = 0.0, waitedForData = false
}

/// What one epoch of training did.
public struct EpochSummary: Sendable, Codable {
    public var epoch: Int
    public var steps: Int
    public var loss: Double
    public var accuracy: Double
    public var seconds: Double
    public var imagesPerSecond: Double
    /// Each step's loss, in order.
    public var stepLosses: [Float]
}

/// Loss and accuracy on a data set; for super-resolution PSNR and SSIM (top-1 and top-5 are 0),
/// and for segmentation pixel accuracy (also `top1`) and mean IoU.
public struct Evaluation: Sendable, Codable {
    public var loss: Double
    public var top1: Double
    public var top5: Double
    public var samples: Int
    /// Super-resolution: mean PSNR (dB) and SSIM of the outputs against the originals, and the
    /// PSNR of the bicubic inputs themselves.
    public var psnr: Double? = nil
    public var ssim: Double? = nil
    public var bicubicPSNR: Double? = nil
    /// Segmentation: the mean over classes of the intersection over union.
    public var meanIoU: Double? = nil
}
