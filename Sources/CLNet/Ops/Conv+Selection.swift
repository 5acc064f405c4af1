#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Each convolution's algorithm, chosen by timing every one that applies, as cuDNN's benchmark
// mode and MIOpen's find-db do: per shape and per direction, once per device, driver and CLNet
// version, and kept on disk so that a second start measures nothing.

/// The algorithms one convolution layer runs, one per direction, and why.
public struct ConvChoice: Sendable, Hashable {
    /// y = conv(x, w).
    public var forward: Conv2D.Algorithm
    /// dx, the input gradient.
    public var data: Conv2D.Algorithm
    /// dw (and the bias gradient), the weight gradient.
    public var weights: Conv2D.Algorithm
    /// How the choice was made: "measured", "cached" (measured by an earlier process),
    /// or "CLNET_CONV_ALGO", with the timings where there were some.
    public var reason: String

    /// The algorithm of `direction`.
    public func algorithm(_ direction: Conv2D.Direction) -> Conv2D.Algorithm {
        switch direction {
        case .forward: forward
        case .data: data
        case .weights: weights
        }
    }
}

extension Conv2D {
    /// A pass of a convolution, each of which may run its own algorithm.
    public enum Direction: String, Sendable, CaseIterable {
        case forward, data, weights
    }

    /// The algorithms this convolution runs on `context`'s device for input `x`: `CLNET_CONV_ALGO`
    /// where it names one that applies, or else the fastest of each direction (at least two
    /// apply to every convolution, implicit GEMM among them), timed on the device (the backward directions only when `training`) and kept
    /// in the disk cache beside the compiled programs (`ProgramDiskCache`).
    /// `storage`: the format of the activations and weight (`Precision`), timed as stored.
    public func choose(on context: Context, input x: Shape, training: Bool,
                       storage: Precision = .fp32) throws(CLNetError) -> ConvChoice {
        let options = applicableAlgorithms
        if let forced = try Self.checkedSetting(), options.contains(forced) {
            return ConvChoice(forward: forced, data: forced, weights: forced, reason: "CLNET_CONV_ALGO")
        }
        // The algorithms that apply are part of the key: a new one is measured, not passed over.
        // Float32 keeps the key it always had, so that the cached choices stay valid.
        let stored = storage == .fp32 ? "" : " storage=\(storage)"
        let key = "\(self) x=\(x) training=\(training)\(stored) of \(options.map(\.rawValue).joined(separator: ","))"
        return try ConvChoiceStore.shared(for: context.device).choice(for: key) { () throws(CLNetError) in
            try measure(on: context, input: x, training: training, options: options, storage: storage)
        }
    }

    /// Times every algorithm that applies (`CLNET_CONV_ALGO` is not consulted, and nothing is
    /// cached) in each direction, as `choose` does when it measures: `clnet-bench conv` prints
    /// what this returns, to see why a layer runs what it runs.
    public func timeAlgorithms(on context: Context, input x: Shape, training: Bool,
                               storage: Precision = .fp32) throws(CLNetError) -> ConvChoice {
        try measure(on: context, input: x, training: training, options: applicableAlgorithms, storage: storage)
    }

    /// Times each algorithm in each direction: one untimed run (it builds the programs), then
    /// the best of `measuredRuns`, each waited for.
    private func measure(on context: Context, input x: Shape, training: Bool,
                         options: [Algorithm], storage: Precision) throws(CLNetError) -> ConvChoice {
        let q = try context.makeQueue(), y = try outputShape(x)
        let xt = try Tensor(context: context, shape: x, storage: storage)
        let w = try Tensor(context: context, shape: weightShape, storage: storage)
        let yt = try Tensor(context: context, shape: y, storage: storage)
        let ws = try Tensor(context: context, shape: [max(1, try workspaceCount(x))])
        let dy = training ? try Tensor(context: context, shape: y, storage: storage) : nil
        let dx = training ? try Tensor(context: context, shape: x, storage: storage) : nil
        let dw = training ? try Tensor(context: context, shape: weightShape) : nil
        // Zeros, not whatever the allocation held: a denormal or NaN would time differently.
        for t in [xt, w, yt, ws] + [dy, dx, dw].compactMap({ $0 }) { try q.fill(t.buffer, with: 0) }
        var best: [Direction: (Algorithm, Double)] = [:], detail: [String] = []
        for direction in training ? Direction.allCases : [.forward] {
            func run(_ option: Algorithm) throws(CLNetError) {
                switch direction {
                case .forward:
                    try self.forward(q, x: xt, weight: w, bias: nil, y: yt, workspace: ws, algorithm: option)
                case .data:
                    try backward(q, x: xt, weight: w, dy: dy!, dx: dx, dweight: nil, dbias: nil, workspace: ws,
                                 algorithm: option)
                case .weights:
                    try backward(q, x: xt, weight: w, dy: dy!, dx: nil, dweight: dw, dbias: nil, workspace: ws,
                                 algorithm: option)
                }
                try q.finish()
            }
            for option in options { try run(option) }
            // The algorithms take turns, so that a stall of a shared host costs them alike.
            var fastest = [Double](repeating: .infinity, count: options.count)
            for _ in 0..<Self.measuredRuns {
                for (i, option) in options.enumerated() {
                    let start = ContinuousClock.now
                    try run(option)
                    fastest[i] = min(fastest[i], seconds(since: start))
                }
            }
            let winner = fastest.indices.min { fastest[$0] < fastest[$1] }!
            best[direction] = (options[winner], fastest[winner])
            detail.append("\(direction.rawValue): " + zip(options, fastest).map {
                "\($0.rawValue) \(($1 * 1e5).rounded() / 100) ms"
            }.joined(separator: ", "))
        }
        let forward = best[.forward]!.0
        return ConvChoice(forward: forward, data: best[.data]?.0 ?? forward, weights: best[.weights]?.0 ?? forward,
                          reason: "measured (" + detail.joined(separator: "; ") + ")")
    }

    /// Timed runs per algorithm and direction. Three, one algorithm after the other, once chose
    /// im2col for ResNet-18's 56x56 forward on a busy host, where Winograd had measured 1.5x
    /// faster (Benchmarks/RESULTS.md).
    static let measuredRuns = 5

    // Read once: every convolution asks.
    static let algorithmSetting = ProcessInfo.processInfo.environment["CLNET_CONV_ALGO"]
}

/// The measured choices of one device: in memory for this process, and in a text file of the
/// device's disk-cache folder (one line per shape: key, the three algorithms, how they were
/// measured), rewritten whole under a temporary name and renamed, so that no reader sees half a
/// file. A line that does not parse is ignored and measured again. `CLNET_CACHE=0` keeps the
/// choices in memory only.
///
/// Processes take turns through a lock file beside it: one measures and writes while the others
/// wait, then read its choice. So the ranks of a data-parallel run, started together, run the
/// same algorithms (and round alike), and none of them times its kernels while another is
/// running its own.
final class ConvChoiceStore: Sendable {
    private let file: URL?
    private let entries: Mutex<[String: ConvChoice]>

    private static let stores = Mutex<[String: ConvChoiceStore]>([:])

    static func shared(for device: Device) -> ConvChoiceStore {
        let env = ProcessInfo.processInfo.environment
        let file = env["CLNET_CACHE"] == "0" ? nil
            : ProgramDiskCache(directory: ProgramDiskCache.defaultRoot(env), device: device).directory
                .appendingPathComponent("conv-algorithms.tsv")
        let key = "\(device.info.name)|\(device.info.driverVersion)|\(file?.path ?? "")"
        return stores.withLock { all in
            if let store = all[key] { return store }
            let store = ConvChoiceStore(file: file)
            all[key] = store
            return store
        }
    }

    init(file: URL?) {
        self.file = file
        entries = Mutex(Self.read(file))
    }

    private static func read(_ file: URL?) -> [String: ConvChoice] {
        var read: [String: ConvChoice] = [:]
        guard let file, let data = FileManager.default.contents(atPath: file.path) else { return read }
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 5, let f = Conv2D.Algorithm(rawValue: fields[1]),
                  let d = Conv2D.Algorithm(rawValue: fields[2]), let w = Conv2D.Algorithm(rawValue: fields[3])
            else { continue }
            read[fields[0]] = ConvChoice(forward: f, data: d, weights: w, reason: "cached, " + fields[4])
        }
        return read
    }

    func lookup(_ key: String) -> ConvChoice? { entries.withLock { $0[key] } }

    /// The choice for `key`: this process's, else the file's (read again under the lock, as
    /// another process may have just written it), else `measure`'s, which is then kept.
    func choice(for key: String, measure: () throws(CLNetError) -> ConvChoice) throws(CLNetError) -> ConvChoice {
        if let known = lookup(key) { return known }
        let lock = file.flatMap(Self.lock)
        defer { if let lock { flock(lock, LOCK_UN); close(lock) } }
        let onDisk = Self.read(file)
        let adopted = entries.withLock { all -> ConvChoice? in
            for (k, v) in onDisk where all[k] == nil { all[k] = v }
            return all[key]
        }
        if let adopted { return adopted }
        let measured = try measure()
        record(key, measured)
        return measured
    }

    /// An exclusive lock on the file's lock file, waited for; nil where none can be taken (the
    /// choice is then measured without one).
    private static func lock(_ file: URL) -> Int32? {
        let path = file.deletingPathExtension().appendingPathExtension("lock").path
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX) == 0 else { close(fd); return nil }
        return fd
    }

    /// Keeps the choice, and rewrites the file; a failure to write only costs the next process a
    /// measurement, so it is not reported.
    func record(_ key: String, _ choice: ConvChoice) {
        let text = entries.withLock { all -> String in
            all[key] = choice
            return all.sorted { $0.key < $1.key }.map { key, c in
                let reason = c.reason.hasPrefix("cached, ") ? String(c.reason.dropFirst(8)) : c.reason
                return [key, c.forward.rawValue, c.data.rawValue, c.weights.rawValue, reason].joined(separator: "\t")
            }.joined(separator: "\n") + "\n"
        }
        guard let file else { return }
        do {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: file, options: .atomic)
        } catch {
            return
        }
    }
}
