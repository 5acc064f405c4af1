import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A GEMM problem to time: C (m x n) = A (m x k) B (k x n), row-major.
struct GEMMShape: Codable, Hashable {
    var label: String
    var m: Int
    var n: Int
    var k: Int
    var flops: Double { 2 * Double(m) * Double(n) * Double(k) }

    static func square(_ s: Int) -> GEMMShape { GEMMShape(label: "\(s)", m: s, n: s, k: s) }

    /// ResNet-50's 3x3 convolution of stage 2 (128 -> 128 channels at 28x28, batch 8) as im2col
    /// + GEMM: out-channels x (batch * pixels) x (in-channels * 9).
    static let conv3x3 = GEMMShape(label: "conv3x3 128ch 28x28 b8", m: 128, n: 8 * 28 * 28, k: 128 * 9)
}

struct GEMMResult: Codable {
    var shape: GEMMShape
    /// The engine that ran it (`clnet` or `clblast`).
    var engine: String
    var time: Timing
    var gflops: Double
}

/// Times `C = A B` for `shape` with random data, on `engine` (default: the one the device uses).
func timeGEMM(_ context: Context, _ shape: GEMMShape, engine: GEMMEngine? = nil, warmup: Int, iters: Int) throws -> GEMMResult {
    let engine = engine ?? GEMMEngine.preferred(for: context.device)
    let queue = try context.makeQueue()
    let a = try context.buffer(floats: shape.m * shape.k)
    let b = try context.buffer(floats: shape.k * shape.n)
    let c = try context.buffer(floats: shape.m * shape.n)
    try queue.write((0..<shape.m * shape.k).map { _ in Float.random(in: -1...1) }, to: a)
    try queue.write((0..<shape.k * shape.n).map { _ in Float.random(in: -1...1) }, to: b)
    let time = try measure(queue, warmup: warmup, iters: iters) {
        try queue.gemm(m: shape.m, n: shape.n, k: shape.k, a: a, b: b, c: c, engine: engine)
    }
    return GEMMResult(shape: shape, engine: engine.rawValue, time: time, gflops: shape.flops / time.median * 1e-9)
}

struct CopyResult: Codable {
    var bytes: Int
    var time: Timing
    /// Bytes read plus bytes written, per second: the faster of the two copies below.
    var gbPerSecond: Double
    /// `clEnqueueCopyBuffer`'s rate, and that of CLNet's copy kernel (`copy_view`). PoCL runs
    /// the buffer copy as one `memcpy` on one core, so on a CPU the kernel, on every core, is
    /// what a memory-bound kernel should be held to.
    var bufferCopyGBPerSecond: Double
    var kernelCopyGBPerSecond: Double
}

/// Times a device-to-device copy of `bytes` (counting bytes read plus bytes written), both as a
/// buffer copy and with CLNet's copy kernel, and keeps the faster.
func timeCopy(_ context: Context, bytes: Int, warmup: Int, iters: Int) throws -> CopyResult {
    let queue = try context.makeQueue()
    let copies = try copyBodies(context, queue, bytes: bytes)
    let buffer = try measure(queue, warmup: warmup, iters: iters, copies.buffer)
    let kernel = try measure(queue, warmup: warmup, iters: iters, copies.kernel)
    let rate = { (t: Timing) in 2 * Double(bytes) / t.median * 1e-9 }
    let best = rate(kernel) > rate(buffer) ? kernel : buffer
    return CopyResult(bytes: bytes, time: best, gbPerSecond: rate(best), bufferCopyGBPerSecond: rate(buffer),
                      kernelCopyGBPerSecond: rate(kernel))
}

/// A copy of `bytes` between two fresh buffers on `queue`, as a buffer copy and with CLNet's copy
/// kernel (which walks the bytes as one sample of floats, in contiguous tiles).
func copyBodies(_ context: Context, _ queue: CommandQueue, bytes: Int)
    throws -> (buffer: () throws -> Void, kernel: () throws -> Void) {
    let src = try context.buffer(bytes: bytes), dst = try context.buffer(bytes: bytes)
    try queue.fill(src, with: 1)
    let a = try Tensor(buffer: src, shape: [1, bytes / 4, 1, 1]), b = try Tensor(buffer: dst, shape: [1, bytes / 4, 1, 1])
    return ({ try queue.copy(from: src, to: dst, bytes: bytes) }, { try queue.copy(from: a, to: b) })
}

struct Peak: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The device's measured GEMM GFLOP/s and copy GB/s, the yardsticks every fraction uses.")

    @OptionGroup var common: Common

    @Option(help: "Square GEMM size (default: 1024 on a CPU, 4096 on a GPU).")
    var size: Int?

    @Option(help: "Bytes per copy buffer in MiB.")
    var copyMiB = 256

    struct Report: Codable {
        var device: DeviceInfo
        var gemm: GEMMResult
        var copy: CopyResult
    }

    func run() throws {
        let context = try common.context()
        let s = size ?? (context.device.info.type == "GPU" ? 4096 : 1024)
        let gemm = try timeGEMM(context, .square(s), warmup: common.warmup, iters: common.iters)
        let bytes = min(copyMiB << 20, context.device.info.maxAllocationBytes)
        let copy = try timeCopy(context, bytes: bytes, warmup: common.warmup, iters: common.iters)
        let report = Report(device: context.device.info, gemm: gemm, copy: copy)
        if common.json { return try printJSON(report) }
        print("device: \(context.device)")
        printTable(header: ["measure", "median ms", "p10 ms", "p90 ms", "rate"], rows: [
            ["SGEMM \(s)^3 (\(gemm.engine))", format(gemm.time.median * 1e3, 2), format(gemm.time.p10 * 1e3, 2),
             format(gemm.time.p90 * 1e3, 2), format(gemm.gflops) + " GFLOP/s"],
            ["copy \(bytes >> 20) MiB", format(copy.time.median * 1e3, 2), format(copy.time.p10 * 1e3, 2),
             format(copy.time.p90 * 1e3, 2), format(copy.gbPerSecond) + " GB/s (read + write)"],
        ])
        print("copy: clEnqueueCopyBuffer \(format(copy.bufferCopyGBPerSecond)) GB/s, copy kernel "
              + "\(format(copy.kernelCopyGBPerSecond)) GB/s; the faster is the yardstick")
    }
}

struct GEMMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "SGEMM GFLOP/s of CLNet's own kernel and of CLBlast at square sizes and a convolution-shaped size.")

    @OptionGroup var common: Common

    @Option(help: "Square sizes, comma-separated.")
    var sizes = "512,1024,2048"

    func run() throws {
        let context = try common.context()
        let shapes = sizes.split(separator: ",").compactMap { Int($0) }.map(GEMMShape.square) + [.conv3x3]
        var results: [GEMMResult] = []
        // The engines alternate per shape, so that a change in the machine's load hits both alike.
        for shape in shapes {
            for engine in GEMMEngine.allCases {
                results.append(try timeGEMM(context, shape, engine: engine, warmup: common.warmup, iters: common.iters))
            }
        }
        if common.json { return try printJSON(results) }
        print("device: \(context.device); CLBlast with CLNet's tuning \(GEMMTuning.parameters(for: context.device).isEmpty || ProcessInfo.processInfo.environment["CLNET_CLBLAST_TUNING"] == "0" ? "off" : "on"); CLNet's GEMM is the device's default: \(GEMMEngine.preferred(for: context.device) == .clnet)")
        printTable(header: ["shape", "m", "n", "k", "engine", "median ms", "p10 ms", "p90 ms", "GFLOP/s", "CLNet / CLBlast"],
                   rows: results.map { r in
            let other = results.first { $0.shape == r.shape && $0.engine != r.engine }
            return [r.shape.label, "\(r.shape.m)", "\(r.shape.n)", "\(r.shape.k)", r.engine, format(r.time.median * 1e3, 2),
                    format(r.time.p10 * 1e3, 2), format(r.time.p90 * 1e3, 2), format(r.gflops),
                    r.engine == "clnet" ? format(r.gflops / (other?.gflops ?? .nan), 2) : ""]
        })
    }
}
