#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Loading and saving an executor's parameters in torchvision's `state_dict` layout.
extension Executor {
    var batchesTrackedNames: Set<String> { graph.batchesTrackedNames }

    /// Loads every parameter and buffer from `file`, strictly: a missing tensor, an unexpected
    /// one, or a shape that differs throws, naming them, and loads nothing.
    /// `num_batches_tracked` entries are accepted and skipped.
    public func load(_ file: SafeTensors) throws(CLNetError) {
        try load(file, ignoring: nil)
    }

    /// `load`, skipping entries whose names start with `prefix` (a checkpoint's optimizer state).
    public func load(_ file: SafeTensors, ignoring prefix: String?) throws(CLNetError) {
        for (name, v) in try graph.parameterValues(from: file, ignoring: prefix) { try setParameter(name, v) }
    }

    /// Writes every parameter and buffer to `url` as safetensors, with `num_batches_tracked` for
    /// each batch norm, so that PyTorch's `load_state_dict(strict=True)` accepts the file. The
    /// write is atomic. An executor does not know its model's specification or data: pass
    /// their `WeightsInfo` so that the file records them (`Trainer.saveWeights` does).
    public func save(to url: URL, info: WeightsInfo? = nil) throws(CLNetError) {
        try SafeTensors.write(try weightTensors(), to: url, metadata: info?.metadata ?? [:])
    }

    /// A hash (FNV-1a) of every trainable parameter's bits: equal digests mean bitwise-equal
    /// weights, which data-parallel ranks must keep.
    public func parameterDigest() throws(CLNetError) -> UInt64 {
        var bytes: [UInt8] = []
        for p in graph.parameters where p.trainable {
            for v in try parameter(p.name) { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        }
        return fnv1a64(bytes)
    }

    /// Every parameter and buffer, with `num_batches_tracked`, as `save` writes them.
    /// `dtype` .fp16 or .bf16 writes 16-bit values (half the file; `--save-dtype`), which every
    /// loader here and PyTorch's read back as they are stored.
    public func weightTensors(dtype: Precision = .fp32) throws(CLNetError) -> [(name: String, value: SafeTensors.Value)] {
        var tensors: [(name: String, value: SafeTensors.Value)] = []
        for p in graph.parameters {
            let values = try parameter(p.name)
            if dtype != .fp32, let bad = values.first(where: { $0.isFinite && !dtype.rounded($0).isFinite }) {
                throw .invalidArgument("\(p.name) holds \(bad), beyond \(dtype)'s range: save it as f32 or bf16 (--save-dtype)")
            }
            tensors.append((p.name, dtype == .fp32 ? .float32(values, shape: p.shape.dims)
                                                   : .float16(values, shape: p.shape.dims, format: dtype)))
        }
        for name in batchesTrackedNames { tensors.append((name, .int64([stepsTaken], shape: []))) }
        return tensors
    }
}

extension Graph {
    /// The `num_batches_tracked` buffer names PyTorch keeps beside each batch norm.
    var batchesTrackedNames: Set<String> {
        Set(nodes.compactMap { node in
            if case .batchNorm = node.operation { return "\(node.name).num_batches_tracked" }
            return nil
        })
    }

    /// Every parameter's values from `file`, checked strictly as `Executor.load` describes, in
    /// parameter order.
    public func parameterValues(from file: SafeTensors, ignoring prefix: String? = nil) throws(CLNetError) -> [(String, [Float])] {
        let tracked = batchesTrackedNames
        var shapes: [String] = [], missing: [String] = [], unexpected: [String] = []
        for p in parameters {
            guard let e = file.entries[p.name] else {
                missing.append("missing \(p.name) \(p.shape)")
                continue
            }
            if e.shape != p.shape.dims {
                shapes.append("\(p.name): file has \(e.shape), model needs \(p.shape)")
            }
        }
        for name in file.entries.keys.sorted() where parameterIndex(name) == nil && !tracked.contains(name)
            && !(prefix.map { name.hasPrefix($0) } ?? false) {
            unexpected.append("unexpected \(name) \(file.entries[name]!.shape)")
        }
        let count = shapes.count + missing.count + unexpected.count
        guard count == 0 else {
            // One line: the first two of each kind say enough to see which model the file is for.
            let shown = [shapes, missing, unexpected].flatMap { $0.prefix(2) }
            throw .invalidShape(operation: "loading weights", message: """
                the file does not match the model (\(count) problem\(count == 1 ? "" : "s"): \(shown.joined(separator: "; "))\
                \(count > shown.count ? "; ..." : "")); are the weights for another model or another --model specification?
                """)
        }
        var values: [(String, [Float])] = []
        for p in parameters { values.append((p.name, try file.floats(p.name))) }
        return values
    }
}
