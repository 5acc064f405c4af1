// The effective receptive field of Luo et al. 2016 ("Understanding the Effective Receptive Field
// in Deep Convolutional Neural Networks"): how much each input pixel moves one unit in the middle
// of a layer's output. The theoretical field of a deep net covers the whole image; the effective
// one is roughly Gaussian and much smaller, and training widens it.
//
// The gradient is taken by the CPU reference executor, in Double and in inference mode: this is
// an analysis run once per model, and the reference is the definition of each op's gradient.

/// The effective receptive field of the centre unit of one layer, averaged over a batch of images.
public struct EffectiveReceptiveField: Sendable {
    /// The node whose output holds the unit.
    public let layer: String
    /// The input's height and width.
    public let height: Int, width: Int
    /// The unit: row and column in the layer's output (its middle), all channels together.
    public let unitRow: Int, unitColumn: Int
    /// The mean over the images of |d(sum over channels of the unit) / d(input)|, summed over the
    /// input's channels: `height` x `width`, row-major.
    public let map: [Double]
    /// The map's centre of mass, in input pixels (row, column).
    public let centreRow: Double, centreColumn: Double
    /// The radius around the centre of mass holding 68% of the map's mass (one standard deviation
    /// of a 1-D Gaussian), in input pixels.
    public let radius68: Double
    /// The distance from the centre of mass to the farthest pixel with any gradient: the
    /// theoretical field, clipped to the image.
    public let supportRadius: Double

    /// Computes the field of `layer` (a node name; default: what the global pooling reads, the
    /// last feature map) of `graph` (built for inference, without a loss, its batch the number of
    /// images) with `parameters` by name, over `images` (the graph input's values, preprocessed).
    public init(graph: Graph, parameters: [String: [Float]], images: [Float], layer: String? = nil) throws(CLNetError) {
        guard graph.inputs.count == 1, graph.shape(of: graph.inputs[0].value).rank == 4 else {
            throw .invalidArgument("an effective receptive field needs a graph with one image input")
        }
        let x = graph.inputs[0].value, xs = graph.shape(of: x)
        guard images.count == xs.count else {
            throw .invalidShape(operation: "receptive field", message: "\(images.count) input values for an input of shape \(xs) (\(xs.count) values)")
        }
        let featureMaps = graph.nodes.filter { graph.shape(of: $0.output).rank == 4 }
        let pooled = graph.nodes.last { $0.operation == .globalAvgPool }.flatMap { graph.producers[$0.inputs[0].index] }
        let name = layer ?? pooled.map { graph.nodes[$0].name } ?? featureMaps.last?.name ?? ""
        guard let node = featureMaps.first(where: { $0.name == name }) else {
            let names = featureMaps.suffix(4).map(\.name).joined(separator: ", ")
            throw .invalidArgument("no feature map named '\(name)' in the model; choose a node with an [N, C, H, W] output, e.g. \(names)")
        }
        // Only the layer and what it depends on: the reference computes every value it is given.
        var needed = Set([node.output.index])
        for n in graph.nodes.reversed() where needed.contains(n.output.index) { needed.formUnion(n.inputs.map(\.index)) }
        var b = GraphBuilder()
        var map = [Value?](repeating: nil, count: graph.shapes.count)
        map[x.index] = try b.input(graph.inputs[0].name, shape: xs)
        for n in graph.nodes where needed.contains(n.output.index) {
            map[n.output.index] = try b.replay(n, of: graph, inputs: n.inputs.map { map[$0.index]! })
        }
        let truncated = b.graph, output = map[node.output.index]!
        var doubles: [String: [Double]] = [:]
        for (i, p) in truncated.parameters.enumerated() {
            doubles[p.name] = try truncated.checkedParameter(i, in: parameters, for: "receptive field").map(Double.init)
        }
        var reference = try ReferenceExecutor(graph: truncated, parameters: doubles)
        let values = try reference.forward([graph.inputs[0].name: images.map(Double.init)], training: false)
        // In inference mode each image's gradient depends on that image only, so one backward
        // pass seeded at the unit of every image gives all of them.
        let ys = truncated.shape(of: output)
        let (row, column) = (ys.h / 2, ys.w / 2)
        var seed = [Double](repeating: 0, count: ys.count)
        for n in 0..<ys.n { for c in 0..<ys.c { seed[((n * ys.c + c) * ys.h + row) * ys.w + column] = 1 } }
        let grads = try reference.backward(values: values, from: output, gradient: seed, inputGradients: true, training: false)
        let dx = grads.values[map[x.index]!.index]
        let plane = xs.h * xs.w
        var field = [Double](repeating: 0, count: plane)
        if !dx.isEmpty {
            for n in 0..<xs.n { for c in 0..<xs.c { for i in 0..<plane { field[i] += abs(dx[(n * xs.c + c) * plane + i]) } } }
        }
        field = field.map { $0 / Double(xs.n) }
        self.layer = name
        (height, width, unitRow, unitColumn, self.map) = (xs.h, xs.w, row, column, field)
        let total = field.reduce(0, +)
        guard total > 0 else {
            // A unit no input pixel moves (e.g. a zero-initialised branch's output): no field.
            (centreRow, centreColumn, radius68, supportRadius) = (Double(xs.h - 1) / 2, Double(xs.w - 1) / 2, 0, 0)
            return
        }
        var (cy, cx) = (0.0, 0.0)
        for i in 0..<plane { cy += Double(i / xs.w) * field[i]; cx += Double(i % xs.w) * field[i] }
        (cy, cx) = (cy / total, cx / total)
        let distance = (0..<plane).map { i in ((Double(i / xs.w) - cy) * (Double(i / xs.w) - cy) + (Double(i % xs.w) - cx) * (Double(i % xs.w) - cx)).squareRoot() }
        var mass = 0.0, r68 = 0.0
        for i in distance.indices.sorted(by: { distance[$0] < distance[$1] }) {
            mass += field[i]
            r68 = distance[i]
            if mass >= 0.68 * total { break }
        }
        let largest = field.max() ?? 0
        (centreRow, centreColumn, radius68) = (cy, cx, r68)
        // Below 1e-9 of the peak is rounding of a zero (Double arithmetic), not a path.
        supportRadius = distance.indices.filter { field[$0] > largest * 1e-9 }.map { distance[$0] }.max() ?? 0
    }

    /// The map as a PNG heat map (viridis-like, scaled to its own peak), each pixel drawn as a
    /// `scale` x `scale` square, with the 68% circle in white.
    public func png(scale: Int = 8) throws(CLNetError) -> [UInt8] {
        guard (1...64).contains(scale) else { throw .invalidArgument("the heat map's scale must be 1 to 64, not \(scale)") }
        let peak = max(map.max() ?? 0, .leastNormalMagnitude)
        let (w, h) = (width * scale, height * scale)
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        for py in 0..<h {
            for px in 0..<w {
                var color = Self.viridis(map[(py / scale) * width + px / scale] / peak)
                // Pixel centres in input coordinates, for the circle.
                let (y, x) = ((Double(py) + 0.5) / Double(scale) - 0.5, (Double(px) + 0.5) / Double(scale) - 0.5)
                let d = ((y - centreRow) * (y - centreRow) + (x - centreColumn) * (x - centreColumn)).squareRoot()
                if radius68 > 0, abs(d - radius68) * Double(scale) < 0.75 { color = (255, 255, 255) }
                let o = (py * w + px) * 3
                (rgb[o], rgb[o + 1], rgb[o + 2]) = color
            }
        }
        return try PNG.encode(width: w, height: h, rgb: rgb)
    }

    /// Viridis, from five of its stops, linearly between them.
    static func viridis(_ t: Double) -> (UInt8, UInt8, UInt8) {
        let stops: [(Double, Double, Double)] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
        let s = min(max(t, 0), 1) * Double(stops.count - 1)
        let i = min(Int(s), stops.count - 2), f = s - Double(i)
        let (a, b) = (stops[i], stops[i + 1])
        return (UInt8((a.0 + (b.0 - a.0) * f).rounded()), UInt8((a.1 + (b.1 - a.1) * f).rounded()), UInt8((a.2 + (b.2 - a.2) * f).rounded()))
    }
}
