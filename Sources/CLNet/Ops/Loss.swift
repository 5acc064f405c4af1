// Softmax cross-entropy on the device. CPU reference: Reference/LossReference.swift; kernels:
// Kernels/Loss.cl.

/// Mean softmax cross-entropy of logits [N, K] against integer labels, with optional label
/// smoothing (PyTorch's `label_smoothing`); it also counts correct top-1 predictions.
public enum SoftmaxCrossEntropy {
    /// The label's rank among a sample's logits, the one definition of top-k accuracy in CLNet:
    /// the logits above it, plus the equal ones before it. A prediction is a top-k hit when the
    /// rank is below k, so a tie goes to the first maximum, as the loss kernel and the reference
    /// count top-1: a model whose logits are all equal is right only for label 0, about 1 in K.
    public static func rank<C: Collection>(ofLabel label: Int, in logits: C) -> Int where C.Element: Comparable {
        let z = Array(logits), target = z[label]
        var rank = 0
        for (j, v) in z.enumerated() where v > target || (v == target && j < label) { rank += 1 }
        return rank
    }

    /// Refuses labels that do not fit `logits` [N, K]: a count other than N, or a class outside
    /// 0 ..< K. The device and the reference executor check labels with this before a step.
    public static func checkLabels(_ labels: [Int], logits: Shape) throws(CLNetError) {
        guard labels.count == logits.n else {
            throw .invalidLabels("loss: needs \(logits.n) labels for logits \(logits), got \(labels.count)")
        }
        if let bad = labels.first(where: { $0 < 0 || $0 >= logits[1] }) {
            throw .invalidLabels("loss: label \(bad) is outside [0, \(logits[1])) for logits \(logits)")
        }
    }

    /// Floats of workspace the forward needs: 2 per sample.
    public static func workspaceCount(batch: Int) -> Int { 2 * batch }

    static func check(_ op: String, _ logits: Tensor, _ labels: Buffer, _ smoothing: Float) throws(CLNetError) {
        guard logits.shape.rank >= 2 else {
            throw .invalidShape(operation: op, message: "logits must be [N, K], got \(logits.shape)")
        }
        guard labels.byteCount >= logits.shape.n * 4 else {
            throw .invalidShape(operation: op, message: "labels buffer of \(labels.byteCount) bytes is too small for \(logits.shape.n) samples")
        }
        guard smoothing >= 0, smoothing < 1 else {
            throw .invalidShape(operation: op, message: "label smoothing must be in [0, 1), got \(smoothing)")
        }
    }

    /// Writes [mean loss, correct count] into `result` (two floats). `labels` holds N Int32
    /// values; one outside [0, K) makes the loss NaN (check labels on the host before upload).
    @discardableResult
    public static func forward(_ q: CommandQueue, logits: Tensor, labels: Buffer, result: Tensor, workspace: Tensor,
                               labelSmoothing: Float = 0, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("SoftmaxCrossEntropy", logits, labels, labelSmoothing)
        let n = logits.shape.n
        guard result.shape.count == 2, workspace.shape.count >= workspaceCount(batch: n) else {
            throw .invalidShape(operation: "SoftmaxCrossEntropy", message: "result \(result.shape) must hold 2 floats and workspace \(workspace.shape) \(2 * n)")
        }
        let per = try q.reduce(.loss, "xent_forward", logits.arguments + [.buffer(labels), .uint(0)] +
                               workspace.vectorArguments + [.count(n), .count(logits.shape.sampleCount),
                                .float(labelSmoothing)], groups: n, waitFor: waitFor)
        return try q.reduce(.loss, "xent_reduce", workspace.vectorArguments + [.count(n)] + result.vectorArguments,
                            groups: 1, waitFor: [per])
    }

    /// dlogits = scale / N * (softmax(logits) - target); `scale` is the loss's upstream gradient.
    @discardableResult
    public static func backward(_ q: CommandQueue, logits: Tensor, labels: Buffer, dlogits: Tensor,
                                labelSmoothing: Float = 0, scale: Float = 1, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        try check("SoftmaxCrossEntropy backward", logits, labels, labelSmoothing)
        try checkSameShape("SoftmaxCrossEntropy backward", ["logits": logits.shape, "dlogits": dlogits.shape])
        return try q.reduce(.loss, "xent_backward", logits.arguments + [.buffer(labels), .uint(0)] + dlogits.arguments +
                            [.count(logits.shape.n), .count(logits.shape.sampleCount), .float(labelSmoothing),
                             .float(scale), .flag(accumulate)], groups: logits.shape.n, waitFor: waitFor)
    }
}

/// Knowledge distillation's loss (Hinton et al. 2015): for student logits z and teacher logits
/// t, the mean over the batch of a T^2 KL(softmax(t / T) || softmax(z / T)) + (1 - a) CE(z, y),
/// the cross-entropy with label smoothing. The T^2 keeps the soft targets' gradient on the same
/// scale as the hard ones' for any temperature.
public struct Distillation: Sendable, Hashable, Codable {
    public var temperature: Float
    /// The soft targets' share a, in [0, 1].
    public var weight: Float
    public var labelSmoothing: Float

    public init(temperature: Float, weight: Float, labelSmoothing: Float = 0) {
        self.temperature = temperature
        self.weight = weight
        self.labelSmoothing = labelSmoothing
    }

    func check(_ op: String) throws(CLNetError) {
        guard temperature > 0, temperature.isFinite, (0...1).contains(weight), (0..<1).contains(labelSmoothing) else {
            throw .invalidShape(operation: op, message: """
                temperature \(temperature) must be positive, weight \(weight) in [0, 1] and label smoothing \(labelSmoothing) in [0, 1)
                """)
        }
    }

    private func checkTensors(_ op: String, _ logits: Tensor, _ teacher: Tensor, _ labels: Buffer) throws(CLNetError) {
        try check(op)
        try SoftmaxCrossEntropy.check(op, logits, labels, labelSmoothing)
        try checkSameShape(op, ["logits": logits.shape, "teacher": teacher.shape])
    }

    /// Writes [mean loss, correct count] into `result`, as `SoftmaxCrossEntropy.forward`.
    @discardableResult
    public func forward(_ q: CommandQueue, logits: Tensor, teacher: Tensor, labels: Buffer, result: Tensor, workspace: Tensor,
                        waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkTensors("Distillation", logits, teacher, labels)
        let n = logits.shape.n
        guard result.shape.count == 2, workspace.shape.count >= SoftmaxCrossEntropy.workspaceCount(batch: n) else {
            throw .invalidShape(operation: "Distillation", message: "result \(result.shape) must hold 2 floats and workspace \(workspace.shape) \(2 * n)")
        }
        let per = try q.reduce(.loss, "kd_forward", logits.arguments + teacher.arguments + [.buffer(labels), .uint(0)] +
                               workspace.vectorArguments + [.count(n), .count(logits.shape.sampleCount), .float(labelSmoothing),
                                .float(temperature), .float(weight)], groups: n, waitFor: waitFor)
        return try q.reduce(.loss, "xent_reduce", workspace.vectorArguments + [.count(n)] + result.vectorArguments,
                            groups: 1, waitFor: [per])
    }

    /// The gradient for the student's logits; the teacher gets none.
    @discardableResult
    public func backward(_ q: CommandQueue, logits: Tensor, teacher: Tensor, labels: Buffer, dlogits: Tensor, scale: Float = 1,
                         accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkTensors("Distillation backward", logits, teacher, labels)
        try checkSameShape("Distillation backward", ["logits": logits.shape, "dlogits": dlogits.shape])
        return try q.reduce(.loss, "kd_backward", logits.arguments + teacher.arguments + [.buffer(labels), .uint(0)] +
                            dlogits.arguments + [.count(logits.shape.n), .count(logits.shape.sampleCount), .float(labelSmoothing),
                             .float(temperature), .float(weight), .float(scale), .flag(accumulate)],
                            groups: logits.shape.n, waitFor: waitFor)
    }
}

/// Per-pixel softmax cross-entropy for semantic segmentation: logits [N, K, H, W] against labels
/// [N, H, W] (one class per pixel, or `ignoreIndex` for a pixel that adds nothing), the mean over
/// the pixels that count, as PyTorch's `CrossEntropyLoss(ignore_index=...)`. A batch whose every
/// pixel is ignored has loss 0 and gradient 0 (PyTorch's is NaN), so that a crop of pure "void"
/// does not stop a training run. The correct count is the pixels whose top-1 class is the label.
public enum PixelCrossEntropy {
    /// Refuses labels that do not fit `logits`: a count other than N * H * W, or a class outside
    /// 0 ..< K that is not `ignoreIndex`.
    public static func checkLabels(_ labels: [Int], logits: Shape, ignoreIndex: Int) throws(CLNetError) {
        let pixels = logits.n * logits.h * logits.w
        guard labels.count == pixels else {
            throw .invalidLabels("per-pixel loss: needs \(pixels) labels (one per pixel) for logits \(logits), got \(labels.count)")
        }
        if let bad = labels.first(where: { ($0 < 0 || $0 >= logits.c) && $0 != ignoreIndex }) {
            throw .invalidLabels("per-pixel loss: label \(bad) is outside [0, \(logits.c)) and is not the ignored \(ignoreIndex), for logits \(logits)")
        }
    }

    /// Floats of workspace the loss keeps from forward to backward: three per pixel and one.
    public static func workspaceCount(_ logits: Shape) -> Int { 3 * logits.n * logits.h * logits.w + 1 }

    static func check(_ op: String, _ logits: Tensor, _ labels: Buffer, _ workspace: Tensor) throws(CLNetError) -> Int {
        try checkRank(op, "logits", logits.shape, 4)
        let pixels = logits.shape.n * logits.shape.h * logits.shape.w
        guard labels.byteCount >= 4 * pixels else {
            throw .invalidShape(operation: op, message: "labels buffer of \(labels.byteCount) bytes is too small for \(pixels) pixels")
        }
        _ = try checkedWorkspace(op, workspace, least: workspaceCount(logits.shape))
        return pixels
    }

    private static func geometry(_ s: Shape, _ ignoreIndex: Int) throws(CLNetError) -> [KernelArgument] {
        guard let ignore = Int32(exactly: ignoreIndex) else {
            throw .invalidArgument("per-pixel loss: ignore index \(ignoreIndex) does not fit 32 bits")
        }
        return try KernelArgument.counts([s.n, s.c, s.h * s.w]) + [.int(ignore)]
    }

    /// Writes [mean loss, correct pixels] into `result` (two floats).
    @discardableResult
    public static func forward(_ q: CommandQueue, logits: Tensor, labels: Buffer, result: Tensor, workspace: Tensor,
                               ignoreIndex: Int, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let pixels = try check("PixelCrossEntropy", logits, labels, workspace)
        guard result.shape.count == 2 else {
            throw .invalidShape(operation: "PixelCrossEntropy", message: "result \(result.shape) must hold 2 floats")
        }
        let per = try q.launchRuns(.loss, "pixel_xent_forward", logits.arguments + [.buffer(labels), .uint(0)] +
                                   workspace.vectorArguments + geometry(logits.shape, ignoreIndex), waitFor: waitFor)
        return try q.reduce(.loss, "pixel_xent_reduce", workspace.vectorArguments + [.count(pixels)] + result.vectorArguments,
                            groups: 1, waitFor: [per])
    }

    /// dlogits = scale / (pixels that count) * (softmax - one-hot) per pixel, 0 where ignored.
    /// Reads the count that `forward` left in `workspace`.
    @discardableResult
    public static func backward(_ q: CommandQueue, logits: Tensor, labels: Buffer, workspace: Tensor, dlogits: Tensor,
                                ignoreIndex: Int, scale: Float = 1, accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> Event {
        _ = try check("PixelCrossEntropy backward", logits, labels, workspace)
        try checkSameShape("PixelCrossEntropy backward", ["logits": logits.shape, "dlogits": dlogits.shape])
        return try q.launchRuns(.loss, "pixel_xent_backward", logits.arguments + [.buffer(labels), .uint(0)] +
                                workspace.vectorArguments + dlogits.arguments + geometry(logits.shape, ignoreIndex) +
                                [.float(scale), .flag(accumulate)], waitFor: waitFor)
    }
}

/// The mean squared error between a prediction and a target of one shape (PyTorch's `MSELoss`),
/// the L2 loss super-resolution trains on. The target is a graph input, given with the step's
/// other inputs; it gets no gradient.
public enum MeanSquaredError {
    /// Work-groups of the first reduction, and so floats of workspace.
    public static let partialGroups = 64

    @discardableResult
    public static func forward(_ q: CommandQueue, prediction x: Tensor, target t: Tensor, result: Tensor, workspace: Tensor,
                               waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("MeanSquaredError", ["prediction": x.shape, "target": t.shape])
        let ws = try checkedWorkspace("MeanSquaredError", workspace, least: partialGroups)
        guard result.shape.count == 2 else {
            throw .invalidShape(operation: "MeanSquaredError", message: "result \(result.shape) must hold 2 floats")
        }
        let partial = try q.reduce(.loss, "mse_partial", x.arguments + t.arguments + ws.vectorArguments +
                                   [.count(x.shape.sampleCount), .count(x.shape.n)], groups: partialGroups, waitFor: waitFor)
        return try q.reduce(.loss, "mse_reduce", ws.vectorArguments + [.count(partialGroups), .count(x.shape.count)] +
                            result.vectorArguments, groups: 1, waitFor: [partial])
    }

    /// dx = scale * 2 (x - t) / count.
    @discardableResult
    public static func backward(_ q: CommandQueue, prediction x: Tensor, target t: Tensor, dx: Tensor, scale: Float = 1,
                                accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("MeanSquaredError backward", ["prediction": x.shape, "target": t.shape, "dx": dx.shape])
        return try q.launchRuns(.loss, "mse_backward", x.arguments + t.arguments + dx.arguments +
                                [.count(x.shape.sampleCount), .count(x.shape.n), .float(scale), .flag(accumulate)],
                                waitFor: waitFor)
    }
}

extension GraphBuilder {
    /// The segmentation loss: per-pixel softmax cross-entropy of `logits` [N, K, H, W]; the
    /// labels (N * H * W, `ignoreIndex` for pixels that add nothing) are given when it runs.
    public mutating func pixelCrossEntropy(_ logits: Value, ignoreIndex: Int = 255, name: String) throws(CLNetError) -> Value {
        let s = shape(logits)
        try require(s.rank == 4, name, "logits must be [N, K, H, W], got \(s) from \(origin(logits))")
        try require(Int32(exactly: ignoreIndex) != nil, name, "ignore index \(ignoreIndex) must fit 32 bits")
        try requireNoLoss(name)
        return try appendNode(name, .pixelCrossEntropy(ignoreIndex: ignoreIndex), [logits], [1], [])
    }

    /// The regression loss: the mean squared error of `prediction` against `target` (a graph
    /// input of the same shape, given with the step's inputs).
    public mutating func meanSquaredError(_ prediction: Value, target: Value, name: String) throws(CLNetError) -> Value {
        // The backward pass writes no gradient for the target, so it must be data.
        try require(graph.producers[target.index] == nil, name, "the target must be a graph input, not the output of \(origin(target))")
        try require(shape(prediction) == shape(target), name,
                    "prediction \(shape(prediction)) from \(origin(prediction)) and target \(shape(target)) from \(origin(target)) differ")
        try requireNoLoss(name)
        return try appendNode(name, .meanSquaredError, [prediction, target], [1], [])
    }
}
