// The arithmetic of `clnet-bench model`: rates, fractions of the device's measured peaks, the
// roofline bound, and the JSON fields it shares with Benchmarks/pytorch_baseline.py. Kept apart
// from the timing code so that tests can check it without timing anything.
import CLNet

/// A device's measured yardsticks (`clnet-bench peak`): what its GEMM and a plain copy reach.
public struct DevicePeak: Codable, Sendable, Equatable {
    /// CLBlast SGEMM on a large square product.
    public var gemmGFLOPS: Double
    /// A device-to-device copy, bytes read plus bytes written.
    public var copyGBPS: Double

    public init(gemmGFLOPS: Double, copyGBPS: Double) {
        self.gemmGFLOPS = gemmGFLOPS
        self.copyGBPS = copyGBPS
    }

    /// Operations per byte where the two limits meet: work of lower intensity cannot reach the
    /// GEMM rate even at full copy bandwidth.
    public var ridge: Double { gemmGFLOPS / copyGBPS }

    /// The least time `cost` can take on this device by the roofline model.
    public func rooflineSeconds(_ cost: WorkCost) -> Double {
        max(cost.flops / (gemmGFLOPS * 1e9), cost.bytes / (copyGBPS * 1e9))
    }

    /// Which limit the roofline model says applies to work of `cost`'s intensity.
    public func bound(_ cost: WorkCost) -> Bound { cost.intensity >= ridge ? .compute : .memory }
}

/// The limit that applies to a layer by the roofline model.
public enum Bound: String, Codable, Sendable {
    case compute, memory
}

/// What one piece of work (a layer, or all layers of a kind) did in a step.
public struct WorkReport: Codable, Sendable, Equatable {
    /// The node's name (`layer1.0.conv1`), or the kind when summed over kinds.
    public var name: String
    /// The kind of operation: `conv im2col+gemm`, `batch norm`, ...
    public var operation: String
    /// Device milliseconds per step.
    public var milliseconds: Double
    /// Of the step's summed device time.
    public var share: Double
    public var gflops: Double
    public var gbPerSecond: Double
    /// `gflops` over the device's GEMM rate.
    public var gemmFraction: Double
    /// `gbPerSecond` over the device's copy bandwidth.
    public var copyFraction: Double
    public var bound: Bound
    /// The roofline's least time over the measured time: 1 means the layer runs as fast as the
    /// device's GEMM and copy rates allow.
    public var rooflineFraction: Double
    public var flops: Double
    public var bytes: Double

    /// Rates from `seconds` of device time per step for work of `cost`, out of `stepSeconds`.
    /// Work that took no recorded time (a concat the memory plan made free) gets rates of zero.
    public init(name: String, operation: String, seconds: Double, stepSeconds: Double, cost: WorkCost, peak: DevicePeak) {
        self.name = name
        self.operation = operation
        milliseconds = seconds * 1e3
        share = stepSeconds > 0 ? seconds / stepSeconds : 0
        gflops = seconds > 0 ? cost.flops / seconds * 1e-9 : 0
        gbPerSecond = seconds > 0 ? cost.bytes / seconds * 1e-9 : 0
        gemmFraction = gflops / peak.gemmGFLOPS
        copyFraction = gbPerSecond / peak.copyGBPS
        bound = peak.bound(cost)
        rooflineFraction = seconds > 0 ? peak.rooflineSeconds(cost) / seconds : 0
        flops = cost.flops
        bytes = cost.bytes
    }

    /// Sums layers by `operation`, most time first, keeping each kind's combined rates.
    public static func byOperation(_ layers: [(report: WorkReport, seconds: Double, cost: WorkCost)], stepSeconds: Double,
                                   peak: DevicePeak) -> [WorkReport] {
        var sums: [String: (Double, WorkCost, Int)] = [:]
        for l in layers {
            let s = sums[l.report.operation] ?? (0, WorkCost(), 0)
            sums[l.report.operation] = (s.0 + l.seconds, s.1 + l.cost, s.2 + 1)
        }
        return sums.map { kind, s in
            WorkReport(name: "\(s.2) layer\(s.2 == 1 ? "" : "s")", operation: kind, seconds: s.0, stepSeconds: stepSeconds,
                       cost: s.1, peak: peak)
        }.sorted { $0.milliseconds > $1.milliseconds }
    }
}

extension Timing {
    /// The same statistics in another unit (`scaled(by: 1e3)`: milliseconds).
    public func scaled(by factor: Double) -> Timing {
        var t = self
        t.median *= factor
        t.p10 *= factor
        t.p90 *= factor
        return t
    }
}

/// The fields that `clnet-bench model --json` and `Benchmarks/pytorch_baseline.py --json` both
/// print at the top level, so that `Benchmarks/compare.sh` can set one against the other.
public struct ModelBenchmarkSummary: Codable, Sendable, Equatable {
    /// `clnet` or `pytorch`.
    public var framework: String
    public var model: String
    public var batch: Int
    public var size: Int
    /// `train` (forward, backward and SGD update) or `infer` (forward, batch norm in eval mode).
    public var mode: String
    public var device: String
    public var warmup: Int
    public var iters: Int
    /// Images per second at the median step time.
    public var imagesPerSecond: Double
    /// Wall-clock time per step, from enqueueing to the device being idle.
    public var milliseconds: Timing
    /// Per step on the device clock (OpenCL profiling events; CUDA events in PyTorch), from the
    /// first command's start to the last one's end. Absent where the device has no such clock.
    public var deviceMilliseconds: Timing?
    /// The most device memory the step had allocated (CLNet: every buffer of the executor).
    public var peakMemoryBytes: Int?

    public init(framework: String, model: String, batch: Int, size: Int, mode: String, device: String, warmup: Int, iters: Int,
                wallSeconds: Timing, deviceSeconds: Timing?, peakMemoryBytes: Int?) {
        self.framework = framework
        self.model = model
        self.batch = batch
        self.size = size
        self.mode = mode
        self.device = device
        self.warmup = warmup
        self.iters = iters
        imagesPerSecond = Double(batch) / wallSeconds.median
        milliseconds = wallSeconds.scaled(by: 1e3)
        deviceMilliseconds = deviceSeconds?.scaled(by: 1e3)
        self.peakMemoryBytes = peakMemoryBytes
    }

    /// The keys both programs print; the test suite checks the Python script names each.
    public static let keys = ["framework", "model", "batch", "size", "mode", "device", "warmup", "iters", "imagesPerSecond",
                              "milliseconds", "deviceMilliseconds", "peakMemoryBytes"]
}
