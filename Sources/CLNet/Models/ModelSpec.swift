/// Models by name or by specification string, as the command-line tools take them.
///
/// A name is one of `ModelSpec.names`. A specification gives a family's constructor parameters
/// the way torchvision's classes take them:
/// - `resnet:block=basic,layers=2.2.2.2,groups=1,width=64,stem=imagenet` (ResNet, ResNeXt, Wide
///   ResNet; `stem=cifar` for the 3x3 stem of ResNeXt-29),
/// - `preact_resnet:block=bottleneck,layers=18.18.18,width=16,widen=1,dropout=0,stem=cifar`,
/// - `wrn:depth=28,widen=10,dropout=0.3` (CIFAR Wide ResNets),
/// - `densenet:growth=12,blocks=2.2.2,init=16,bn_size=4,compression=0.5,stem=imagenet`
///   (`bn_size=0` for no bottleneck),
/// - `cifar_resnet:depth=20` (the CIFAR ResNets of He et al. 2015),
/// - `repvgg:layers=1.2.4.14.1,a=0.75,b=2.5,stem=imagenet,cascade=0` (RepVGG, Ding et al. 2021;
///   `cascade=1` adds a linear 1x1-then-3x3 branch to every block),
/// - `sew_resnet:block=basic,layers=2.2.2.2,T=4,connect=add,neuron=if,surrogate=atan` (SEW
///   ResNet, Fang et al. 2021: `connect=and|iand`, `neuron=lif` with `tau=2`, `surrogate=sigmoid`,
///   `alpha=`, `detach_reset=0|1`, `reset=hard|soft`, `threshold=1`),
/// - `attention:modules=1.2.3,stem=imagenet,width=64` (the Residual Attention Network, Wang et
///   al. 2017; `attention56`, `attention92`, `attention_cifar` = `modules=2.2.2,stem=cifar,width=16`),
/// - `drrn:b=1,u=25,width=128,channels=1` (DRRN super-resolution, Tai et al. 2017; no classes),
/// - `denseaspp:backbone=densenet121,d0=128,d1=64,rates=3.6.12.18.24,dropout=0.1`
///   (DenseASPP segmentation, Yang et al. 2018; `growth=`, `blocks=`, `init=`, `bn_size=` change
///   the backbone; 19 classes unless `classes=`).
/// Every family takes `classes=N`, `channels=N` (input channels) and `norm=group:N` for group norm
/// instead of batch norm, the residual ones `stochastic_depth=P` (the last block's drop
/// probability, decaying linearly to the first), and a name may be followed by parameters too
/// (`resnet18:classes=10`). More for `resnet:`: `se=R` (squeeze-and-excitation, reduction R),
/// `sk=R` (selective kernels; `sk_split=1` splits each unit's input between its paths),
/// `act=prelu`, `dilation=0.1.1` (torchvision's `replace_stride_with_dilation`), `deform=3.4`
/// (deformable 3x3 convolutions in those stages; `dcn=v2` for modulated ones, `deform_groups=G`
/// for offset groups), `dendritic=3.4` (dendritic ReLU in those stages' branches, Metta et al. 2023;
/// `dendritic_fc=1` for the classifier), `dcls=3.4` (convolutions with learnable spacings in place of
/// those stages' 3x3 ones, Khalfaoui-Hassani et al. 2023; `dcls_size=5` the footprint, `dcls_count=9`
/// the elements per channel pair), `pool=conv` (a strided convolution instead of max pooling); for
/// `cifar_resnet:` `act=prelu` and `norm=none` (Fixup; with `fixup=0` the same network from the
/// default initialisation, for `clnet train --init`). Any model takes `fold_bn=1`: the same
/// network with each convolution's batch norm folded into it (`clnet export --fold-bn` writes its
/// weights), and `rep=1`: each sum of branches linear in one input (RepVGG's blocks) merged into
/// one convolution (`clnet export --reparam`); ReLU basic-block ResNets take `rm=1`: the plain
/// network RMNet makes of it (`clnet export --rm`), and `mid=W1.W2...` sets each residual block's
/// inner width (what filter pruning leaves; `clnet prune` writes it).
public enum ModelSpec {
    /// Every model name, in a stable order.
    public static let names: [String] = [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet161", "densenet169",
        "densenet201", "preact_resnet18", "preact_resnet34", "preact_resnet50", "preact_resnet101", "preact_resnet152",
        "preact_resnet200",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202", "preact_resnet110", "preact_resnet164",
        "preact_resnet1001", "resnext29_8x64d", "resnext29_16x64d", "wrn16_8", "wrn28_10", "densenet_bc_100_12",
        "densenet40_12", "seresnet18", "seresnet34", "seresnet50", "seresnext50_32x4d", "skresnet18", "skresnet34",
        "skresnet50", "skresnext50_32x4d", "sknet50", "repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_b1",
        "sew_resnet18", "sew_resnet34", "sew_resnet50", "sew_resnet101", "sew_resnet152",
        "attention56", "attention92", "attention_cifar", "drrn", "denseaspp121", "denseaspp161", "denseaspp169", "denseaspp201",
    ]

    /// A model of one family, before its graph is built.
    enum Model {
        case resnet(ResNet)
        case preact(PreActResNet)
        case densenet(DenseNet)
        case cifarResNet(CIFARResNet)
        case repvgg(RepVGG)
        case sew(SEWResNet)
        case attention(ResidualAttentionNetwork)
        case drrn(DRRN)
        case denseaspp(DenseASPP)

        /// Classes unless `classes=` says: 10 for the CIFAR models, 19 (Cityscapes) for
        /// segmentation, 1000 otherwise.
        var defaultClasses: Int {
            switch self {
            case .denseaspp: 19
            default: imageSize == 32 ? 10 : 1000
            }
        }

        var imageSize: Int {
            switch self {
            case let .resnet(m): m.stem == .imagenet ? 224 : 32
            case let .preact(m): m.stem == .imagenet ? 224 : 32
            case let .densenet(m): m.stem == .imagenet ? 224 : 32
            case .cifarResNet: 32
            case let .repvgg(m): m.stem == .imagenet ? 224 : 32
            case let .sew(m): m.stem == .imagenet ? 224 : 32
            case let .attention(m): m.stem == .imagenet ? 224 : 32
            // DRRN's training patches; DenseASPP's crops.
            case .drrn: 31
            case .denseaspp: 512
            }
        }
    }

    /// The preset a name (or a bare family name) stands for.
    static func preset(_ head: String) throws(CLNetError) -> Model? {
        switch head {
        case "resnet18": .resnet(.resnet18)
        case "resnet34": .resnet(.resnet34)
        case "resnet", "resnet50": .resnet(.resnet50)
        case "resnet101": .resnet(.resnet101)
        case "resnet152": .resnet(.resnet152)
        case "resnext50_32x4d": .resnet(.resnext50_32x4d)
        case "resnext101_32x8d": .resnet(.resnext101_32x8d)
        case "resnext101_64x4d": .resnet(.resnext101_64x4d)
        case "wide_resnet50_2": .resnet(.wide_resnet50_2)
        case "wide_resnet101_2": .resnet(.wide_resnet101_2)
        case "resnext29_8x64d": .resnet(.resnext29_8x64d)
        case "resnext29_16x64d": .resnet(.resnext29_16x64d)
        case "seresnet18": .resnet(.seresnet18)
        case "seresnet34": .resnet(.seresnet34)
        case "seresnet50": .resnet(.seresnet50)
        case "seresnext50_32x4d": .resnet(.seresnext50_32x4d)
        case "skresnet18": .resnet(.skresnet18)
        case "skresnet34": .resnet(.skresnet34)
        case "skresnet50": .resnet(.skresnet50)
        case "skresnext50_32x4d", "sknet50": .resnet(.skresnext50_32x4d)
        case "densenet", "densenet121": .densenet(.densenet121)
        case "densenet161": .densenet(.densenet161)
        case "densenet169": .densenet(.densenet169)
        case "densenet201": .densenet(.densenet201)
        case "densenet_bc_100_12": .densenet(.densenet_bc_100_12)
        case "densenet40_12": .densenet(.densenet40_12)
        case "preact_resnet18": .preact(.preact_resnet18)
        case "preact_resnet34": .preact(.preact_resnet34)
        case "preact_resnet", "preact_resnet50": .preact(.preact_resnet50)
        case "preact_resnet101": .preact(.preact_resnet101)
        case "preact_resnet152": .preact(.preact_resnet152)
        case "preact_resnet200": .preact(.preact_resnet200)
        case "preact_resnet110": .preact(.preact_resnet110)
        case "preact_resnet164": .preact(.preact_resnet164)
        case "preact_resnet1001": .preact(.preact_resnet1001)
        case "wrn16_8": .preact(try .wideResNet(depth: 16, widen: 8))
        case "wrn", "wrn28_10": .preact(try .wideResNet(depth: 28, widen: 10))
        case "cifar_resnet", "resnet20": .cifarResNet(CIFARResNet(n: 3))
        case "resnet32": .cifarResNet(CIFARResNet(n: 5))
        case "resnet44": .cifarResNet(CIFARResNet(n: 7))
        case "resnet56": .cifarResNet(CIFARResNet(n: 9))
        case "resnet110": .cifarResNet(CIFARResNet(n: 18))
        case "resnet1202": .cifarResNet(CIFARResNet(n: 200))
        case "repvgg", "repvgg_a0": .repvgg(.a0)
        case "repvgg_a1": .repvgg(.a1)
        case "repvgg_a2": .repvgg(.a2)
        case "repvgg_b0": .repvgg(.b0)
        case "repvgg_b1": .repvgg(.b1)
        case "sew_resnet", "sew_resnet18": .sew(.sew_resnet18)
        case "sew_resnet34": .sew(.sew_resnet34)
        case "sew_resnet50": .sew(.sew_resnet50)
        case "sew_resnet101": .sew(.sew_resnet101)
        case "sew_resnet152": .sew(.sew_resnet152)
        case "attention56": .attention(.attention56)
        case "attention", "attention92": .attention(.attention92)
        case "attention_cifar": .attention(.attentionCIFAR)
        case "drrn": .drrn(.b1u25)
        case "denseaspp", "denseaspp121": .denseaspp(.densenet121)
        case "denseaspp161": .denseaspp(.densenet161)
        case "denseaspp169": .denseaspp(.densenet169)
        case "denseaspp201": .denseaspp(.densenet201)
        default: nil
        }
    }

    /// `spec` with `values` added for the keys it does not set, e.g. the data's `channels` and
    /// `classes`.
    public static func filling(_ spec: String, _ values: [String: String]) -> String {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        let given = Set((parts.count > 1 ? parts[1] : "").split(separator: ",").compactMap { $0.split(separator: "=").first.map(String.init) })
        let added = values.keys.sorted().filter { !given.contains($0) }.map { "\($0)=\(values[$0]!)" }
        guard !added.isEmpty else { return spec }
        return parts.count > 1 && !parts[1].isEmpty ? "\(spec),\(added.joined(separator: ","))" : "\(parts[0]):\(added.joined(separator: ","))"
    }

    /// The image size a model is meant for: 32 for the CIFAR models, 224 otherwise.
    public static func defaultSize(_ spec: String) -> Int {
        let head = spec.split(separator: ":").first.map(String.init) ?? spec
        var size = (try? preset(head))??.imageSize ?? 224
        if spec.contains("stem=cifar") { size = 32 } else if spec.contains("stem=imagenet") { size = 224 }
        return size
    }

    /// The graph of `spec` for `batch` images of `size` x `size` (default: the model's own).
    public static func graph(_ spec: String, batch: Int, size: Int? = nil, loss: Bool = true) throws(CLNetError)
        -> (graph: Graph, logits: Value) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let head = parts.first, !head.isEmpty else {
            throw .invalidArgument("empty model specification; one of \(names.joined(separator: ", "))")
        }
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
        func int(_ key: String, _ fallback: Int, minimum: Int = 1) throws(CLNetError) -> Int {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            guard let v = Int(text), v >= minimum, v <= 100_000 else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be an integer from \(minimum) to 100000")
            }
            return v
        }
        func fraction(_ key: String, _ fallback: Double, _ range: ClosedRange<Double>) throws(CLNetError) -> Double {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            guard let v = Double(text), range.contains(v) else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be a number from \(range.lowerBound) to \(range.upperBound)")
            }
            return v
        }
        func list(_ key: String, _ fallback: [Int], minimum: Int = 1) throws(CLNetError) -> [Int] {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            let values = parts.compactMap { Int($0) }
            guard !values.isEmpty, values.count <= 8, values.count == parts.count,
                  values.allSatisfy({ $0 >= minimum && $0 <= 10_000 }) else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be up to 8 \(minimum == 1 ? "positive integers" : "integers from \(minimum)") joined by '.'")
            }
            return values
        }
        // Block widths: one per residual block, so more than `list` allows.
        func widths() throws(CLNetError) -> [Int]? {
            guard let text = options["mid"] else { return nil }
            used.insert("mid")
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            let values = parts.compactMap { Int($0) }
            guard !values.isEmpty, values.count == parts.count, values.count <= 10_000, values.allSatisfy({ $0 >= 1 && $0 <= 100_000 }) else {
                throw .invalidArgument("model specification '\(spec)': mid=\(text) must be one positive width per residual block, joined by '.'")
            }
            return values
        }
        func choice<T>(_ key: String, _ fallback: T, _ values: [String: T]) throws(CLNetError) -> T {
            guard let text = options[key] else { return fallback }
            used.insert(key)
            guard let v = values[text] else {
                throw .invalidArgument("model specification '\(spec)': \(key)=\(text) must be one of \(values.keys.sorted().joined(separator: ", "))")
            }
            return v
        }
        let norm: NormChoice
        if let text = options["norm"] {
            used.insert("norm")
            if text == "batch" { norm = .batch }
            else if text == "none" { norm = .none }
            else if text.hasPrefix("group:"), let g = Int(text.dropFirst(6)), g > 0, g <= 100_000 { norm = .group(g) }
            else { throw .invalidArgument("model specification '\(spec)': norm=\(text) must be batch, group:N or none") }
        } else {
            norm = .batch
        }
        guard let preset = try preset(head) else {
            throw .invalidArgument("""
                unknown model '\(head)'; one of \(names.joined(separator: ", ")), or resnet:, preact_resnet:, wrn:, \
                densenet:, cifar_resnet:, repvgg:, sew_resnet:, attention:, drrn:, denseaspp: with parameters
                """)
        }
        let classes = try int("classes", preset.defaultClasses)
        let channels = try int("channels", 3)
        let blocks: [String: ResNet.Block] = ["basic": .basic, "bottleneck": .bottleneck]
        func stochasticDepth() throws(CLNetError) -> Float { Float(try fraction("stochastic_depth", 0, 0...0.99)) }
        let stems: [String: ResNet.Stem] = ["imagenet": .imagenet, "cifar": .cifar]
        func activation() throws(CLNetError) -> ResNet.Activation { try choice("act", .relu, ["relu": .relu, "prelu": .prelu]) }
        // Every option is read, and an unknown one refused, before anything is built: a large network
        // takes seconds to build, and a typo should not cost them.
        let build: () throws(CLNetError) -> (graph: Graph, logits: Value)
        switch preset {
        case var .resnet(model):
            model.block = try choice("block", model.block, blocks)
            model.layers = try list("layers", model.layers)
            model.groups = try int("groups", model.groups)
            model.widthPerGroup = try int("width", model.widthPerGroup)
            model.stem = try choice("stem", model.stem, stems)
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            model.stochasticDepth = try stochasticDepth()
            model.activation = try activation()
            model.stemPool = try choice("pool", model.stemPool, ["max": .max, "conv": .conv])
            model.blockWidths = try widths()
            if options["dilation"] != nil {
                let flags = try list("dilation", [], minimum: 0).map { $0 != 0 }
                guard flags.count == 3 else {
                    throw .invalidArgument("model specification '\(spec)': dilation takes 3 flags (stages 2 to 4), e.g. dilation=0.1.1")
                }
                model.replaceStrideWithDilation = flags
            }
            if options["deform"] != nil {
                let stages = try list("deform", [])
                model.deformable = ResNet.Deformable(stages: Set(stages),
                                                     modulated: try choice("dcn", false, ["v1": false, "v2": true]),
                                                     offsetGroups: try int("deform_groups", 1))
            }
            if options["dendritic"] != nil { model.dendriticStages = Set(try list("dendritic", [])) }
            if options["dcls"] != nil {
                model.learnableSpacings = ResNet.LearnableSpacings(stages: Set(try list("dcls", [])), size: try int("dcls_size", 5),
                                                                   count: try int("dcls_count", 9))
            }
            model.dendriticHead = try choice("dendritic_fc", false, ["0": false, "1": true])
            if options["se"] != nil && options["sk"] != nil {
                throw .invalidArgument("model specification '\(spec)': se and sk exclude each other")
            }
            if case let .squeezeExcitation(r) = model.attention { model.attention = .squeezeExcitation(reduction: try int("se", r, minimum: 0)) }
            else if options["se"] != nil { model.attention = .squeezeExcitation(reduction: try int("se", 16, minimum: 0)) }
            if case var .selectiveKernel(unit) = model.attention {
                unit.reduction = try int("sk", unit.reduction, minimum: 0)
                model.attention = .selectiveKernel(unit)
            } else if options["sk"] != nil {
                var unit = ResNet.SelectiveKernel.paper
                unit.reduction = try int("sk", 16, minimum: 0)
                model.attention = .selectiveKernel(unit)
            }
            if case var .selectiveKernel(unit) = model.attention, options["sk_split"] != nil {
                unit.splitInput = try choice("sk_split", unit.splitInput, ["0": false, "1": true])
                model.attention = .selectiveKernel(unit)
            }
            // 0 turns the attention off: `sknet50:sk=0` is ResNeXt-50.
            switch model.attention {
            case .squeezeExcitation(0): model.attention = .none
            case let .selectiveKernel(unit) where unit.reduction == 0: model.attention = .none
            default: break
            }
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case var .preact(model):
            if head.hasPrefix("wrn") {
                let depth = try int("depth", 6 * model.layers[0] + 4)
                let widen = try int("widen", model.widen)
                model = try .wideResNet(depth: depth, widen: widen, dropout: Float(try fraction("dropout", 0, 0...0.99)))
            } else {
                model.block = try choice("block", model.block, blocks)
                model.layers = try list("layers", model.layers)
                model.baseWidth = try int("width", model.baseWidth)
                model.widen = try int("widen", model.widen)
                model.dropout = Float(try fraction("dropout", Double(model.dropout), 0...0.99))
                model.stem = try choice("stem", model.stem, stems)
            }
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            model.stochasticDepth = try stochasticDepth()
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case var .densenet(model):
            model.growth = try int("growth", model.growth)
            model.blocks = try list("blocks", model.blocks)
            model.initialFeatures = try int("init", model.initialFeatures)
            model.bottleneckSize = try int("bn_size", model.bottleneckSize, minimum: 0)
            model.compression = try fraction("compression", model.compression, 0.01...1)
            model.stem = try choice("stem", model.stem, stems)
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case let .cifarResNet(preset):
            let depth = try int("depth", 6 * preset.n + 2)
            var model = try CIFARResNet(depth: depth, inChannels: channels, classes: classes)
            model.norm = norm
            model.stochasticDepth = try stochasticDepth()
            model.activation = try activation()
            model.blockWidths = try widths()
            model.fixupInitialization = try choice("fixup", true, ["0": false, "1": true])
            if !model.fixupInitialization && norm != .none {
                throw .invalidArgument("model specification '\(spec)': fixup=0 turns off Fixup's initialisation, which only norm=none has")
            }
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size ?? 32, loss: loss) }
        case var .repvgg(model):
            model.layers = try list("layers", model.layers)
            model.a = try fraction("a", model.a, 0.01...64)
            model.b = try fraction("b", model.b, 0.01...64)
            model.stem = try choice("stem", model.stem, stems)
            model.cascade = try choice("cascade", false, ["0": false, "1": true])
            model.classes = classes
            model.inChannels = channels
            if norm != .batch {
                throw .invalidArgument("model specification '\(spec)': RepVGG's branches merge through batch norm; norm=batch only")
            }
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case var .sew(model):
            model.block = try choice("block", model.block, blocks)
            model.layers = try list("layers", model.layers)
            model.stem = try choice("stem", model.stem, stems)
            model.classes = classes
            model.inChannels = channels
            model.connect = try choice("connect", model.connect, Dictionary(uniqueKeysWithValues: SEWConnect.allCases.map { ($0.rawValue, $0) }))
            var neuron = model.neuron
            neuron.steps = try int("T", neuron.steps)
            let leaky = try choice("neuron", false, ["if": false, "lif": true])
            if leaky { neuron.dynamics = .leaky(tau: Float(try fraction("tau", 2, 1...1000))) }
            let sigmoid = try choice("surrogate", false, ["atan": false, "sigmoid": true])
            let alpha = Float(try fraction("alpha", sigmoid ? 4 : 2, 0.01...100))
            neuron.surrogate = sigmoid ? .sigmoid(alpha: alpha) : .atan(alpha: alpha)
            neuron.detachReset = try choice("detach_reset", neuron.detachReset, ["0": false, "1": true])
            neuron.hardReset = try choice("reset", neuron.hardReset, ["hard": true, "soft": false])
            neuron.threshold = Float(try fraction("threshold", Double(neuron.threshold), 0.001...1000))
            model.neuron = neuron
            if norm != .batch {
                throw .invalidArgument("model specification '\(spec)': SEW ResNet normalises with batch norm over the time steps; norm=batch only")
            }
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case var .attention(model):
            model.modules = try list("modules", model.modules)
            model.stem = try choice("stem", model.stem, stems)
            model.width = try int("width", model.width)
            model.classes = classes
            model.inChannels = channels
            model.norm = norm
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size, loss: loss) }
        case var .drrn(model):
            model.blocks = try int("b", model.blocks)
            model.units = try int("u", model.units)
            model.width = try int("width", model.width)
            model.channels = try int("channels", 1)
            if norm != .batch || options["classes"] != nil {
                throw .invalidArgument("model specification '\(spec)': DRRN has no norm and no classes; it takes b, u, width and channels")
            }
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size ?? 31, loss: loss) }
        case var .denseaspp(model):
            if let name = options["backbone"] {
                used.insert("backbone")
                guard case let .denseaspp(preset)? = try Self.preset("denseaspp" + name.dropFirst("densenet".count)),
                      name.hasPrefix("densenet") else {
                    throw .invalidArgument("model specification '\(spec)': backbone=\(name) must be densenet121, densenet161, densenet169 or densenet201")
                }
                model = preset
            }
            model.backbone.growth = try int("growth", model.backbone.growth)
            model.backbone.blocks = try list("blocks", model.backbone.blocks)
            model.backbone.initialFeatures = try int("init", model.backbone.initialFeatures)
            model.backbone.bottleneckSize = try int("bn_size", model.backbone.bottleneckSize, minimum: 0)
            model.backbone.inChannels = channels
            model.backbone.norm = norm
            model.reduction = try int("d0", model.reduction)
            model.branch = try int("d1", model.branch)
            model.rates = try list("rates", model.rates)
            model.dropout = Float(try fraction("dropout", Double(model.dropout), 0...0.99))
            model.classes = classes
            build = { () throws(CLNetError) in try model.graph(batch: batch, size: size ?? 512, loss: loss) }
        }
        let removeResiduals = try choice("rm", false, ["0": false, "1": true])
        let mergeBranches = try choice("rep", false, ["0": false, "1": true])
        // RMNet's plain network has its batch norms folded whatever fold_bn says.
        let foldNorms = try choice("fold_bn", false, ["0": false, "1": true])
        if mergeBranches && (removeResiduals || foldNorms) {
            throw .invalidArgument("model specification '\(spec)': rep=1 is a rewrite of its own; it does not combine with fold_bn or rm")
        }
        let unknown = Set(options.keys).subtracting(used)
        if let key = unknown.sorted().first {
            throw .invalidArgument("model specification '\(spec)': unknown parameter '\(key)' for \(head)")
        }
        let result = try build()
        var folded = result
        if mergeBranches {
            let merged = try result.graph.reparameterizingBranches()
            guard !merged.merges.isEmpty else {
                throw .invalidArgument("model specification '\(spec)': rep=1, but \(head) has no sum of linear branches to merge")
            }
            guard let logits = merged.values[result.logits.index] else {
                throw .invalidArgument("model specification '\(spec)': merging branches removed the logits")
            }
            folded = (merged.graph, logits)
        } else if removeResiduals {
            let plain = try result.graph.removingResiduals()
            guard let logits = plain.values[result.logits.index] else {
                throw .invalidArgument("model specification '\(spec)': removing residuals removed the logits")
            }
            folded = (plain.graph, logits)
        } else if foldNorms {
            let fold = try result.graph.foldingBatchNorms()
            guard let logits = fold.values[result.logits.index] else {
                throw .invalidArgument("model specification '\(spec)': folding removed the logits")
            }
            folded = (fold.graph, logits)
        }
        return folded
    }
}

/// Batch norm, or group norm with a number of groups, in any model.
public enum NormChoice: Sendable, Equatable {
    case batch
    case group(Int)
    /// No normalisation: only the CIFAR ResNets, as Fixup (`CIFARResNet.fixupGraph`).
    case none
}

extension GraphBuilder {
    /// The chosen normalisation, with torchvision's names (group norm has no running statistics).
    mutating func norm(_ x: Value, _ choice: NormChoice, relu: Bool = false, name: String) throws(CLNetError) -> Value {
        switch choice {
        case .batch: return try batchNorm(x, relu: relu, name: name)
        case let .group(g): return try groupNorm(x, groups: g, relu: relu, name: name)
        case .none:
            throw .invalidArgument("norm=none (Fixup) is built for the CIFAR ResNets only (cifar_resnet:depth=20,norm=none); \(name) needs a norm")
        }
    }
}
