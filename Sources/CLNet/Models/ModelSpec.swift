/// Models by name or by specification string, as the command-line tools take them.
///
/// A name is one of `ModelSpec.names` (torchvision's, and the CIFAR ResNets `resnet20` to
/// `resnet1202`). A specification gives a family's constructor parameters the way torchvision's
/// classes take them, e.g. `resnet:block=basic,layers=2.2.2.2,groups=1,width=64,classes=10`,
/// `densenet:growth=12,blocks=2.2.2,init=16,bn_size=4,classes=10`, `cifar_resnet:depth=20,channels=1`.
/// Any of them takes `norm=group:32` for group norm instead of batch norm, and a name may be
/// followed by parameters too (`resnet18:classes=10`).
public enum ModelSpec {
    /// Every model name, in a stable order.
    public static let names: [String] = [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet161", "densenet169",
        "densenet201", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
    ]

    /// The image size a model is meant for: 32 for the CIFAR models, 224 otherwise.
    public static func defaultSize(_ spec: String) -> Int {
        let family = spec.split(separator: ":").first.map(String.init) ?? spec
        return family.hasPrefix("cifar") || ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]
            .contains(family) ? 32 : 224
    }

    /// The graph of `spec` for `batch` images of `size` x `size` (default: the model's own) with
    /// `channels` input channels where the family allows it.
    public static func graph(_ spec: String, batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError)
        -> (graph: Graph, logits: Value) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let head = parts.first, !head.isEmpty else { throw .invalidArgument("empty model specification; one of \(names.joined(separator: ", "))") }
        var options: [String: String] = [:]
        if parts.count == 2 {
            for item in parts[1].split(separator: ",") {
                let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else {
                    throw .invalidArgument("model specification '\(spec)': '\(item)' is not key=value")
                }
                options[kv[0]] = kv[1]
            }
        }
        var used: Set<String> = []
        func int(_ key: String, _ fallback: Int) throws(CLNetError) -> Int {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            guard let v = Int(text), v > 0, v <= 100_000 else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be an integer from 1 to 100000")
            }
            return v
        }
        func list(_ key: String, _ fallback: [Int]) throws(CLNetError) -> [Int] {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            let values = text.split(separator: ".").compactMap { Int($0) }
            guard !values.isEmpty, values.count <= 8, values.count == text.split(separator: ".").count,
                  values.allSatisfy({ $0 > 0 && $0 <= 10_000 }) else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be up to 8 positive integers joined by '.'")
            }
            return values
        }
        let norm: NormChoice
        if let text = options["norm"] {
            used.insert("norm")
            if text == "batch" { norm = .batch }
            else if text.hasPrefix("group:"), let g = Int(text.dropFirst(6)), g > 0 { norm = .group(g) }
            else { throw .invalidArgument("model specification '\(spec)': norm=\(text) must be batch or group:N") }
        } else {
            norm = .batch
        }
        let classes = try int("classes", head.hasPrefix("cifar") || defaultSize(head) == 32 ? 10 : 1000)
        let channels = try int("channels", head.hasPrefix("cifar") || defaultSize(head) == 32 ? 3 : 3)
        let result: (graph: Graph, logits: Value)
        switch head {
        case "resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
             "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2":
            let preset: ResNet = switch head {
            case "resnet18": .resnet18
            case "resnet34": .resnet34
            case "resnet101": .resnet101
            case "resnet152": .resnet152
            case "resnext50_32x4d": .resnext50_32x4d
            case "resnext101_32x8d": .resnext101_32x8d
            case "resnext101_64x4d": ResNet(block: .bottleneck, layers: [3, 4, 23, 3], groups: 64, widthPerGroup: 4)
            case "wide_resnet50_2": .wide_resnet50_2
            case "wide_resnet101_2": ResNet(block: .bottleneck, layers: [3, 4, 23, 3], widthPerGroup: 128)
            default: .resnet50
            }
            var model = preset
            if let b = options["block"] {
                used.insert("block")
                guard b == "basic" || b == "bottleneck" else {
                    throw .invalidArgument("model specification '\(spec)': block=\(b) must be basic or bottleneck")
                }
                model.block = b == "basic" ? .basic : .bottleneck
            }
            model.layers = try list("layers", model.layers)
            model.groups = try int("groups", model.groups)
            model.widthPerGroup = try int("width", model.widthPerGroup)
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            result = try model.graph(batch: batch, size: size ?? 224, loss: loss)
        case "densenet", "densenet121", "densenet161", "densenet169", "densenet201":
            var model: DenseNet = switch head {
            case "densenet161": .densenet161
            case "densenet169": .densenet169
            case "densenet201": .densenet201
            default: .densenet121
            }
            model.growth = try int("growth", model.growth)
            model.blocks = try list("blocks", model.blocks)
            model.initialFeatures = try int("init", model.initialFeatures)
            model.bottleneckSize = try int("bn_size", model.bottleneckSize)
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            result = try model.graph(batch: batch, size: size ?? 224, loss: loss)
        case "cifar_resnet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202":
            let depth = try int("depth", head == "cifar_resnet" ? 20 : Int(head.dropFirst(6))!)
            var model = try CIFARResNet(depth: depth, inChannels: channels, classes: classes)
            model.norm = norm
            result = try model.graph(batch: batch, size: size ?? 32, loss: loss)
        default:
            throw .invalidArgument("unknown model '\(head)'; one of \(names.joined(separator: ", ")), or resnet:, densenet:, cifar_resnet: with parameters")
        }
        let unknown = Set(options.keys).subtracting(used).subtracting(["classes", "channels"])
        if let key = unknown.sorted().first {
            throw .invalidArgument("model specification '\(spec)': unknown parameter '\(key)' for \(head)")
        }
        return result
    }
}

/// Batch norm, or group norm with a number of groups, in any model.
public enum NormChoice: Sendable, Equatable {
    case batch
    case group(Int)
}

extension GraphBuilder {
    /// The chosen normalisation, with torchvision's names (group norm has no running statistics).
    mutating func norm(_ x: Value, _ choice: NormChoice, relu: Bool = false, name: String) throws(CLNetError) -> Value {
        switch choice {
        case .batch: return try batchNorm(x, relu: relu, name: name)
        case let .group(g): return try groupNorm(x, groups: g, relu: relu, name: name)
        }
    }
}
