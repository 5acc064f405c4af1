// Channel concatenation and its inverse, the channel slice, on the device. CPU reference:
// Reference/ConcatReference.swift; kernel: Kernels/Concat.cl.

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

/// Channels `start ..< start + count` of a tensor, as `torch.split` gives a selective kernel's
/// paths their halves of the input.
public struct ChannelSlice: Sendable, Equatable {
    public var start: Int
    public var count: Int

    public init(start: Int, count: Int) {
        self.start = start
        self.count = count
    }

    /// The slice's shape, or an error naming the input's shape.
    public func outputShape(_ x: Shape) throws(CLNetError) -> Shape {
        try checkRank("ChannelSlice", "x", x, 4)
        guard count > 0, start >= 0, start + count <= x.c else {
            throw .invalidShape(operation: "ChannelSlice", message: "channels \(start)..<\(start + count) are not inside x \(x)")
        }
        return [x.n, count, x.h, x.w]
    }

    /// Copies the slice of `x` into `y`.
    @discardableResult
    public func forward(_ q: CommandQueue, x: Tensor, y: Tensor, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("ChannelSlice", ["expected y": try outputShape(x.shape), "y": y.shape])
        return try q.copy(from: try x.slice(channels: start..<start + count), to: y, waitFor: waitFor)
    }

    /// The input gradient: `dy` inside the slice and zero outside, or, with `accumulate`, `dy`
    /// added inside the slice and the rest left as it is.
    @discardableResult
    public func backward(_ q: CommandQueue, dy: Tensor, dx: Tensor, accumulate: Bool = false,
                         waitFor: [Event] = []) throws(CLNetError) -> [Event] {
        try checkSameShape("ChannelSlice backward", ["expected dy": try outputShape(dx.shape), "dy": dy.shape])
        var events: [Event] = []
        if !accumulate {
            for outside in [0..<start, start + count..<dx.shape.c] where !outside.isEmpty {
                events.append(try q.fill(try dx.slice(channels: outside), with: 0, waitFor: waitFor))
            }
        }
        events.append(try q.copy(from: dy, to: try dx.slice(channels: start..<start + count), accumulate: accumulate,
                                 waitFor: waitFor))
        return events
    }
}

extension CommandQueue {
    /// Sets every element of a tensor view (which may be a strided channel slice) to `value`.
    @discardableResult
    public func fill(_ t: Tensor, with value: Float, waitFor: [Event] = []) throws(CLNetError) -> Event {
        let sample = t.shape.sampleCount
        return try launchRuns(.concat, "fill_view", t.arguments + [.count(sample), .count(t.shape.n),
                                                                   .count(CommandQueue.tiles(sample)), .float(value)],
                              waitFor: waitFor)
    }

    /// Copies (or, with `accumulate`, adds) a tensor into another view of the same shape, either
    /// of which may be a strided channel slice: the general copy that the executor and the
    /// concatenation use. Its kernel is `copy_view` in Concat.cl, beside its first user. It also
    /// converts between float32 and a 16-bit storage (a master weight into its 16-bit copy, the
    /// float loss into a 16-bit value).
    @discardableResult
    public func copy(from src: Tensor, to dst: Tensor, accumulate: Bool = false, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try checkSameShape("tensor copy", ["source": src.shape, "destination": dst.shape])
        let sample = src.shape.sampleCount, tiles = CommandQueue.tiles(sample)
        var conversion: [String: String] = [:]
        if src.storage != dst.storage {
            guard src.storage == .fp32 || dst.storage == .fp32 else {
                throw .invalidArgument("tensor copy: from \(src.storage) to \(dst.storage); convert through float32")
            }
            conversion[src.storage == .fp32 ? "SRC_FLOAT" : "DST_FLOAT"] = "1"
        }
        return try launchRuns(.concat, "copy_view", src.arguments + dst.arguments +
                              [.count(sample), .count(src.shape.n), .count(tiles), .flag(accumulate)],
                              specialised: conversion, waitFor: waitFor)
    }
}
