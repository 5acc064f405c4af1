import CLNet
import Foundation
import Synchronization
import Testing

/// One context for the whole test process, as a program would hold one: kernels build once.
enum Shared {
    private static let made = Result { () throws(CLNetError) -> Context in try Context() }
    static func context() throws -> Context { try made.get() }

    /// The other layouts of the memory-bound kernels (lanes, floats per load): a GPU's, 64 lanes
    /// sharing each run (with their local-memory reductions) and loads of 4 floats (NVIDIA, AMD and
    /// Intel GPUs report a preferred width of 1 or 4), and an AVX2 CPU's, one lane with loads of 8; with the device's own (16
    /// on this AVX-512 machine), each VEC the kernels are written for runs on any machine.
    private static let otherLayouts = [(64, 4), (1, 8)].map { lanes, width in
        Result { () throws(CLNetError) -> Context in try Context(lanes: lanes, loadWidth: width) }
    }

    /// A queue on each layout of the memory-bound kernels: the device's own and the others.
    static func queuesForEachLayout() throws -> [CommandQueue] {
        let own = try context()
        var queues = [try own.makeQueue()]
        for layout in otherLayouts {
            let other = try layout.get()
            if other.laneCount != own.laneCount || other.loadWidth != own.loadWidth { queues.append(try other.makeQueue()) }
        }
        return queues
    }
}

/// ‖a − b‖ / ‖b‖ in Double; infinity when sizes differ or anything is NaN, so NaN never passes.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    relativeError(a.map(Double.init), b.map(Double.init))
}

func relativeError(_ a: [Float], _ b: [Double]) -> Double {
    relativeError(a.map(Double.init), b)
}

func relativeError(_ a: [Double], _ b: [Double]) -> Double {
    guard a.count == b.count else { return .infinity }
    var diff = 0.0, norm = 0.0
    for i in a.indices {
        if a[i].isNaN || b[i].isNaN { return .infinity }
        diff += (a[i] - b[i]) * (a[i] - b[i])
        norm += b[i] * b[i]
    }
    if norm == 0 { return diff == 0 ? 0 : .infinity }
    return (diff / norm).squareRoot()
}

/// Euclidean norm, the denominator of `relativeError`.
func norm(_ v: [Double]) -> Double {
    v.reduce(0) { $0 + $1 * $1 }.squareRoot()
}

/// Every test draws a fresh seed and prints it, so that a failure can be replayed:
/// `CLNET_TEST_SEED=<seed> swift test --filter <test>` gives every generator that seed.
func freshGenerator(_ label: String) -> SeededGenerator {
    let replay = ProcessInfo.processInfo.environment["CLNET_TEST_SEED"].flatMap { UInt64($0) }
    let seed = replay ?? UInt64.random(in: 0...UInt64.max)
    print("\(label): seed \(seed)")
    return SeededGenerator(seed: seed)
}

func randomFloats(_ count: Int, using rng: inout SeededGenerator) -> [Float] {
    (0..<count).map { _ in Float.random(in: -1...1, using: &rng) }
}

/// Resident memory of this process in bytes, from /proc.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

/// The directory holding the test binary, where SwiftPM also puts `clnet`.
func productsDirectory() -> URL {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    // On Linux the tests run from CLNetPackageTests.xctest inside the products folder.
    while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("clnet").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir
}

// MARK: - Operator tests

/// Bounds of the operator suite: relative error ‖a − b‖ / ‖b‖ against the Double reference.
let forwardBound = 1e-5
let backwardBound = 1e-4

func randomDoubles(_ count: Int, using rng: inout SeededGenerator, in range: ClosedRange<Double> = -1...1) -> [Double] {
    (0..<count).map { _ in Double(Float(Double.random(in: range, using: &rng))) }
}

/// A device tensor holding `values`. With `strided`, it is a view into a larger NaN-filled
/// buffer (offset 2, two floats of gap between samples), which exercises the kernels' batch-stride
/// addressing and shows any read outside the view.
func deviceTensor(_ q: CommandQueue, _ values: [Double], _ shape: Shape, strided: Bool = false) throws -> Tensor {
    let t = try poisonedTensor(q, shape, strided: strided)
    try q.write(values.map(Float.init), to: t)
    return t
}

/// A tensor whose every element (and, when strided, the gaps around it) is NaN.
func poisonedTensor(_ q: CommandQueue, _ shape: Shape, strided: Bool = false) throws -> Tensor {
    let stride = shape.sampleCount + (strided ? 2 : 0)
    let offset = strided ? 2 : 0
    let buffer = try q.context.buffer(floats: offset + shape[0] * stride + 1)
    try q.fill(buffer, with: .nan)
    return try Tensor(buffer: buffer, shape: shape, offset: offset, batchStride: stride)
}

/// Reads `t` and checks it against `want` within `bound`, naming `what` on failure. For a
/// strided view (from `poisonedTensor` or `deviceTensor`) it also checks that the NaN around and
/// between its samples is untouched: a kernel writing past a sample would corrupt a DenseNet
/// block's neighbouring slice.
func expectClose(_ q: CommandQueue, _ t: Tensor, _ want: [Double], _ bound: Double, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    let got = try q.read(t)
    let error = relativeError(got, want)
    let what = "\(what) (\(q.context.laneCount) lanes, VEC=\(q.context.loadWidth))"
    #expect(error <= bound, "\(what): relative error \(error) > \(bound)", sourceLocation: sourceLocation)
    guard !t.isDense else { return }
    let all: [Float] = try q.read(t.buffer)
    var inside = Set<Int>()
    for n in 0..<t.shape[0] { for j in 0..<t.shape.sampleCount { inside.insert(t.offset + n * t.batchStride + j) } }
    let written = all.indices.filter { !inside.contains($0) && !all[$0].isNaN }
    #expect(written.isEmpty, "\(what): wrote outside the view at \(written.prefix(5))", sourceLocation: sourceLocation)
}

/// Central finite differences of a scalar function in Double.
func finiteDifference(at x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var x = x
    return x.indices.map { i in
        let keep = x[i]
        x[i] = keep + h
        let up = f(x)
        x[i] = keep - h
        let down = f(x)
        x[i] = keep
        return (up - down) / (2 * h)
    }
}

/// Σ a·b, the scalar whose gradient with respect to an op's output is `b`.
func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

/// Shapes every element-wise test sweeps: batch 1 and more, odd sizes, channels not a multiple of 4.
/// The last one's samples are two tiles of the memory-bound kernels' runs.
let elementwiseShapes: [Shape] = [[1, 1, 1, 1], [1, 3, 5, 7], [2, 6, 1, 1], [3, 5, 9, 11], [4, 17, 4, 3], [2, 3, 60, 50]]

/// What a command-line tool printed and how it exited.
struct ToolRun {
    var status: Int32
    var stdout: Data
    var stderr: String
}

/// Runs one of the package's executables (`clnet`, `clnet-bench`) to completion.
func runTool(_ tool: String, _ arguments: [String], environment: [String: String] = [:], in directory: URL? = nil) throws -> ToolRun {
    try runProgram(productsDirectory().appendingPathComponent(tool).path, arguments, environment: environment, in: directory)
}

/// Runs any program (`mpirun`) to completion.
func runProgram(_ path: String, _ arguments: [String], environment: [String: String] = [:], in directory: URL? = nil) throws -> ToolRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    if let directory { process.currentDirectoryURL = directory }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Standard error is read on another thread, so that neither pipe fills up and blocks the tool.
    let errorData = Mutex(Data())
    let read = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        errorData.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() }
        read.signal()
    }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    read.wait()
    return ToolRun(status: process.terminationStatus, stdout: output,
                   stderr: String(decoding: errorData.withLock { $0 }, as: UTF8.self))
}

/// `x` with each element whose pre-activation (`preActivation(x)`, a norm's output before its
/// fused ReLU) lies within `margin` of ReLU's kink moved away from it, and rounded to float32 as
/// the device reads it. On the kink's other side in float32, one element's whole gradient goes the
/// other way: over 18,000 values of a channel that is a 6e-3 error in the scale's gradient, and
/// about one test case in a few hundred drew such an element.
func awayFromKink(_ x: [Double], margin: Double = 1e-4, _ preActivation: ([Double]) -> [Double],
                  sourceLocation: SourceLocation = #_sourceLocation) throws -> [Double] {
    var x = x
    for _ in 0..<4 {
        let pre = preActivation(x)
        let near = pre.indices.filter { abs(pre[$0]) < margin }
        if near.isEmpty { return x }
        // The norms' scales here are about 0.3 to 2, so 4 margins of input move a value at least one margin.
        for i in near { x[i] = Double(Float(x[i] + (pre[i] >= 0 ? 4 : -4) * margin)) }
    }
    let pre = preActivation(x)
    try #require(pre.allSatisfy { abs($0) >= margin }, "inputs stay near the ReLU kink", sourceLocation: sourceLocation)
    return x
}

/// How far a forward pass is from a point where the loss is not differentiable: the smallest
/// distance of a ReLU's or PReLU's input from 0, of a max-pooling window's two largest inputs
/// from each other, or of a spiking neuron's potential from its threshold, relative to that
/// tensor's RMS. The device computes in float32 and
/// the reference in Double, so an input within rounding of such a kink can fall on the other
/// side on the device and route its whole gradient differently: a real difference of the
/// function, not of the kernels. Training-mode norms are evaluated with batch statistics. Values
/// that are exactly 0 (or exactly tied) in Double are so by construction and exact on the device.
func kinkMargin(_ graph: Graph, values: [[Double]], parameters: [String: [Double]]) -> Double {
    func rms(_ v: [Double]) -> Double { (v.reduce(0) { $0 + $1 * $1 } / Double(max(v.count, 1))).squareRoot() }
    // Exact zeros (a dropped branch added to a ReLU's zeros) are exact on the device too.
    func nearestZero(_ v: [Double]) -> Double { (v.lazy.filter { $0 != 0 }.map(abs).min() ?? .infinity) / max(rms(v), 1e-300) }
    var margin = Double.infinity
    for node in graph.nodes {
        let x = values[node.inputs[0].index], shape = graph.shape(of: node.inputs[0])
        let p = node.parameters.map { parameters[graph.parameters[$0].name]! }
        switch node.operation {
        case .relu, .prelu:
            margin = min(margin, nearestZero(x))
        case let .dendritic(op, _):
            // Every connection's ReLU input: x plus that connection's bias.
            let d = p[1], cg = op.conv.inChannels / op.conv.groups, og = op.conv.outChannels / op.conv.groups
            let plane = shape.rank == 2 ? 1 : shape.h * shape.w, scale = max(rms(x), 1e-300)
            for (i, v) in x.enumerated() {
                let c = (i / plane) % shape.c, g = c / cg
                for o in g * og..<(g + 1) * og where v + d[o * cg + c % cg] != 0 {
                    margin = min(margin, abs(v + d[o * cg + c % cg]) / scale)
                }
            }
        case let .spikingNeuron(neuron):
            // A spike's threshold is a step: H on its other side fires differently.
            let h = Reference.spikingPotentials(x, shape: shape, neuron: neuron)
            let nearest = h.lazy.map { abs($0 - Double(neuron.threshold)) }.min() ?? .infinity
            margin = min(margin, nearest / max(rms(h), 1e-300))
        case .add(relu: true):
            margin = min(margin, nearestZero(zip(x, values[node.inputs[1].index]).map(+)))
        case let .batchNorm(relu: true, eps, _):
            let pre = Reference.batchNormTraining(x, shape: shape.rank == 2 ? [shape.n, shape.c, 1, 1] : shape, gamma: p[0],
                                                  beta: p[1], runningMean: p[2], runningVar: p[3], eps: Double(eps)).y
            margin = min(margin, nearestZero(pre))
        case let .groupNorm(groups, relu: true, eps):
            margin = min(margin, nearestZero(Reference.groupNorm(x, shape: shape, gamma: p[0], beta: p[1], groups: groups,
                                                                 eps: Double(eps))))
        case let .maxPool(window):
            let out = graph.shape(of: node.output), scale = max(rms(x), 1e-300)
            for plane in 0..<(shape.n * shape.c) {
                for oh in 0..<out.h {
                    for ow in 0..<out.w {
                        var taps: [Double] = []
                        for kh in 0..<window.kernel.h {
                            for kw in 0..<window.kernel.w {
                                let ih = oh * window.stride.h - window.padding.h + kh, iw = ow * window.stride.w - window.padding.w + kw
                                if ih >= 0 && ih < shape.h && iw >= 0 && iw < shape.w { taps.append(x[(plane * shape.h + ih) * shape.w + iw]) }
                            }
                        }
                        taps.sort(by: >)
                        // Exact ties (zeros out of a ReLU) are exact on the device too, and broken alike.
                        if taps.count > 1, taps[0] != taps[1] { margin = min(margin, (taps[0] - taps[1]) / scale) }
                    }
                }
            }
        default:
            break
        }
    }
    return margin
}
