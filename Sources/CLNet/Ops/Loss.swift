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
