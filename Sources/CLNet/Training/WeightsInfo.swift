// What a weights file says about its model, so that the file alone is enough to use it: the
// model specification, the input size, the normalisation, the data set and its class names,
// kept as strings in the safetensors `__metadata__`, which PyTorch's loaders ignore.

import FoundationEssentials

/// The model, input and classes a weights file was trained for, as CLNet records them in every
/// weights file and checkpoint it writes (`clnet.*` keys of the safetensors metadata).
public struct WeightsInfo: Sendable, Equatable {
    /// The full model specification, with channels and classes (and, for rewritten weights,
    /// `fold_bn=1`, `rm=1` or `mid=...`).
    public var model: String
    /// The side of the square input it was trained at.
    public var imageSize: Int?
    /// The per-channel normalisation of 0...1 inputs it was trained with.
    public var mean: [Float]?, std: [Float]?
    /// The data set it was trained on, as `--data` named it.
    public var dataset: String?
    /// The class names in label order (image folders).
    public var classes: [String]?
    /// The CLNet that wrote the file.
    public var clnetVersion: String

    public init(model: String, imageSize: Int? = nil, mean: [Float]? = nil, std: [Float]? = nil, dataset: String? = nil,
                classes: [String]? = nil, clnetVersion: String = CLNet.version) {
        self.model = model
        self.imageSize = imageSize
        self.mean = mean
        self.std = std
        self.dataset = dataset
        self.classes = classes
        self.clnetVersion = clnetVersion
    }

    enum Key {
        static let model = "clnet.model", imageSize = "clnet.image_size", mean = "clnet.mean", std = "clnet.std"
        static let dataset = "clnet.dataset", classes = "clnet.classes", version = "clnet.version"
    }

    /// The info of a file's metadata; nil when the file has none (PyTorch's files), and an error
    /// when CLNet's keys are there but unreadable.
    public init?(metadata: [String: String], file: String) throws(CLNetError) {
        guard let model = metadata[Key.model] else { return nil }
        func floats(_ key: String) throws(CLNetError) -> [Float]? {
            guard let text = metadata[key] else { return nil }
            let values = text.split(separator: ",").map { Float(String($0)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
                throw .invalidArgument("\(file): its metadata \(key) is '\(text)', not comma-separated numbers")
            }
            return values.map { $0! }
        }
        var classes: [String]? = nil
        if let text = metadata[Key.classes] {
            guard let list = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
                throw .invalidArgument("\(file): its metadata \(Key.classes) is not a JSON list of names")
            }
            classes = list
        }
        var size: Int? = nil
        if let text = metadata[Key.imageSize] {
            guard let s = Int(text), s > 0 else { throw .invalidArgument("\(file): its metadata \(Key.imageSize) is '\(text)'") }
            size = s
        }
        self.init(model: model, imageSize: size, mean: try floats(Key.mean), std: try floats(Key.std),
                  dataset: metadata[Key.dataset], classes: classes, clnetVersion: metadata[Key.version] ?? "unknown")
    }

    /// The info of the weights file at `url`, or nil when it has none.
    public static func read(_ file: SafeTensors, path: String) throws(CLNetError) -> WeightsInfo? {
        try WeightsInfo(metadata: file.metadata, file: path)
    }

    /// The metadata entries, all strings as safetensors requires.
    public var metadata: [String: String] {
        var m = [Key.model: model, Key.version: clnetVersion]
        if let imageSize { m[Key.imageSize] = "\(imageSize)" }
        if let mean { m[Key.mean] = mean.map { "\($0)" }.joined(separator: ",") }
        if let std { m[Key.std] = std.map { "\($0)" }.joined(separator: ",") }
        if let dataset { m[Key.dataset] = dataset }
        if let classes, let json = try? JSONEncoder().encode(classes) { m[Key.classes] = String(decoding: json, as: UTF8.self) }
        return m
    }

    /// The same info for a rewritten model (`export`, `prune`), by this CLNet.
    public func rewritten(as model: String) -> WeightsInfo {
        var info = self
        info.model = model
        info.clnetVersion = CLNet.version
        return info
    }

    /// The model specification to use with a file whose info is `info` when the command was
    /// given `given` (nil: none). The file's specification fills in what `given` leaves out
    /// (channels and classes, say), and then the two must be the same network: the same name
    /// and the same options, or the error shows both. Without info (a file from PyTorch),
    /// `given` is needed.
    public static func model(given: String?, info: WeightsInfo?, file: String) throws(CLNetError) -> String {
        guard let info else {
            guard let given else {
                throw .invalidArgument("""
                    \(file) does not say which model it holds (it has no CLNet metadata: written by PyTorch or an older \
                    CLNet); give --model, e.g. --model resnet18:classes=10
                    """)
            }
            return given
        }
        guard let given else { return info.model }
        let theirs = options(info.model)
        let filled = ModelSpec.filling(given, theirs.values)
        // Options that change the computation but not the parameters (dilation, norm groups,
        // dropout) must agree too, so the comparison is of the whole specification.
        guard head(filled) == head(info.model), options(filled).values == theirs.values else {
            throw .invalidArgument("""
                --model \(given) does not agree with \(file), which holds \(info.model); drop --model to use the file's, \
                or give weights for \(given)
                """)
        }
        return filled
    }

    /// The specification without the keys in `keys`: what `clnet train --weights` takes from
    /// a record, leaving the data's channels and classes and the run's own settings to the run.
    public static func removing(_ keys: Set<String>, from spec: String) -> String {
        let kept = options(spec).order.filter { !keys.contains($0.key) }.map { "\($0.key)=\($0.value)" }
        return kept.isEmpty ? head(spec) : head(spec) + ":" + kept.joined(separator: ",")
    }

    static func head(_ spec: String) -> String { String(spec.split(separator: ":", maxSplits: 1).first ?? "") }

    static func options(_ spec: String) -> (values: [String: String], order: [(key: String, value: String)]) {
        let parts = spec.split(separator: ":", maxSplits: 1)
        var values: [String: String] = [:], order: [(key: String, value: String)] = []
        for item in parts.count > 1 ? parts[1].split(separator: ",") : [] {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, values[kv[0]] == nil else { continue }
            values[kv[0]] = kv[1]
            order.append((kv[0], kv[1]))
        }
        return (values, order)
    }
}
