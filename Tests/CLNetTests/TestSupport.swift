import CLNet
import Foundation
import Testing

/// One context for the whole test process, as a program would hold one: kernels build once.
enum Shared {
    private static let made = Result { () throws(CLNetError) -> Context in try Context() }
    static func context() throws -> Context { try made.get() }
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

/// A small, fast generator; every test draws a fresh seed and prints it, so a failure can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

func freshGenerator(_ label: String) -> SplitMix64 {
    let seed = UInt64.random(in: 0...UInt64.max)
    print("\(label): seed \(seed)")
    return SplitMix64(seed: seed)
}

func randomFloats(_ count: Int, using rng: inout SplitMix64) -> [Float] {
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
