// Channel concatenation on the device. CPU reference: Reference/ConcatReference.swift; kernel:
// Kernels/Concat.cl.

/// Concatenation along channels (DenseNet).
///
/// The copy-free form: allocate the concatenated tensor once and give each producer
/// `output.slice(channels:)` as its output; every operator accepts such strided views. The
/// explicit form below copies, for graphs that cannot place their producers.
public enum Concat {
    /// The concatenated shape, or an error naming the mismatching inputs.
    public static func outputShape(_ inputs: [Shape]) throws(CLNetError) -> Shape {
        guard let first = inputs.first else { throw .invalidShape(operation: "Concat", message: "needs at least one input") }
        for (i, s) in inputs.enumerated() {
            try checkRank("Concat", "input \(i)", s, 4)
            guard s.n == first.n, s.h == first.h, s.w == first.w else {
                throw .invalidShape(operation: "Concat", message: """
                    input \(i) has shape \(s) but input 0 has shape \(first); batch and spatial sizes must match
                    """)
            }
        }
        return [first.n, inputs.reduce(0) { $0 + $1.c }, first.h, first.w]
    }

    /// Copies each input into its channel slice of `y`.
    @discardableResult
    public static func forward(_ q: CommandQueue, inputs: [Tensor], y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        let out = try outputShape(inputs.map(\.shape))
        try checkSameShape("Concat", ["expected output": out, "y": y.shape])
        var start = 0, events: [Event] = []
        for x in inputs {
            events.append(try q.copy(from: x, to: try y.slice(channels: start..<start + x.shape.c), waitFor: waitFor))
            start += x.shape.c
        }
        return events
    }

    /// Copies (or adds, with `accumulate`) each channel slice of `dy` into the matching input
    /// gradient; a nil gradient is skipped.
    @discardableResult
    public static func backward(_ q: CommandQueue, dy: Tensor, dxs: [Tensor?], channels: [Int], accumulate: Bool = false,
                                waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        guard channels.allSatisfy({ $0 > 0 }), channels.reduce(0, +) == dy.shape.c, dxs.count == channels.count else {
            throw .invalidShape(operation: "Concat backward", message: "channels \(channels) do not split dy \(dy.shape)")
        }
        var start = 0, events: [Event] = []
        for (dx, c) in zip(dxs, channels) {
            defer { start += c }
            guard let dx else { continue }
            events.append(try q.copy(from: try dy.slice(channels: start..<start + c), to: dx, accumulate: accumulate,
                                     waitFor: waitFor))
        }
        return events
    }
}

extension CommandQueue {
    /// Copies (or, with `accumulate`, adds) a tensor into another view of the same shape, either
    /// of which may be a strided channel slice: the general copy that the executor and the
    /// concatenation use. Its kernel is `copy_view` in Concat.cl, beside its first user.
    @discardableResult
    public func copy(from src: Tensor, to dst: Tensor, accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("tensor copy", ["source": src.shape, "destination": dst.shape])
        let sample = src.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        return try launchRuns(.concat, "copy_view", src.arguments + dst.arguments +
                              [.count(sample), .count(src.shape.n), .count(tiles), .flag(accumulate)],
                              waitFor: waitFor)
    }
}
