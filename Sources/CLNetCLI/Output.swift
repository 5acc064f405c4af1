// What the two command-line tools share: tables, JSON, numbers, errors, timing statistics.
// Kept out of the CLNet library, which programs link and which prints nothing.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes one line to standard error.
public func printError(_ message: String) {
    let line = message.hasSuffix("\n") ? message : message + "\n"
    var bytes = Array(line.utf8)
    _ = write(2, &bytes, bytes.count)
}

/// Flushes standard output, so that progress shows before a long step or a crash.
public func flushOutput() {
    fflush(nil)
}

/// Prints `value` as indented JSON with sorted keys.
public func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows under a header, each column as wide as its widest cell.
public func printTable(header: [String], rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { c, text in
            text + String(repeating: " ", count: max(0, widths[min(c, widths.count - 1)] - text.count))
        }
        var line = cells.joined(separator: "  ")
        while line.last == " " { line.removeLast() }
        print(line)
    }
}

/// `value` with `digits` digits after the point, e.g. `format(3.14159, 2) == "3.14"`.
public func format(_ value: Double, _ digits: Int = 1) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
    var scale = 1.0
    for _ in 0..<max(0, digits) { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return "\(value)" }
    let whole = UInt64(scaled)
    let divisor = UInt64(scale)
    var text = String(whole / divisor)
    if digits > 0 {
        let frac = String(whole % divisor)
        text += "." + String(repeating: "0", count: digits - frac.count) + frac
    }
    return (value < 0 && scaled != 0 ? "-" : "") + text
}

/// Median and spread of repeated timings, in seconds.
public struct Timing: Codable, Sendable, Equatable {
    public var median: Double
    public var p10: Double
    public var p90: Double
    public var samples: Int

    /// Summarises `samples` (at least one): the median, and the 10th and 90th percentiles by
    /// nearest rank.
    public init(_ samples: [Double]) {
        let s = samples.sorted()
        precondition(!s.isEmpty, "Timing needs at least one sample")
        func at(_ q: Double) -> Double { s[min(s.count - 1, Int((q * Double(s.count - 1)).rounded()))] }
        median = s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        p10 = at(0.1)
        p90 = at(0.9)
        self.samples = s.count
    }
}

/// Seconds elapsed since `start`.
public func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}
