import ArgumentParser
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import CLNet
import CLNetCLI

/// Each convolution algorithm's rounding error on the 3x3 stride-1 layers of the ResNets, against
/// the CPU reference in Double: the measurement behind Winograd F(4x4)'s bound
/// (`Conv2D.winograd4x4Bound`), which the tests' small shapes cannot show.
struct ConvError: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv-error",
        abstract: "Relative error of every convolution algorithm against the Double reference, forward and backward, on ResNet-sized 3x3 layers.")

    @OptionGroup var common: Common

    @Option(help: "Batch size.")
    var batch = 1

    @Option(help: "Random seed of the inputs.")
    var seed: UInt64 = 1

    struct Row: Codable {
        var layer: String
        var inputs: String
        var algorithm: String
        var forward: Double
        var inputGradient: Double
        var weightGradient: Double
    }

    /// The 3x3 stride-1 layers of ResNet-18/34/50 (channels, side) and of the CIFAR ResNets.
    static let layers: [(channels: Int, side: Int)] = [(64, 56), (128, 28), (256, 14), (512, 7), (16, 32), (32, 16), (64, 8)]

    func run() throws {
        let context = try common.context()
        let q = try context.makeQueue()
        var generator = SeededGenerator(seed: seed)
        var rows: [Row] = []
        for (c, side) in Self.layers {
            let conv = Conv2D(inChannels: c, outChannels: c, kernel: 3, padding: 1)
            let shape: Shape = [batch, c, side, side], out = try conv.outputShape(shape)
            // Weights at He initialisation's scale; inputs signed, or as a ReLU leaves them.
            let scale = (2.0 / Double(9 * c)).squareRoot()
            let w = (0..<conv.weightShape.count).map { _ in generator.normal() * scale }
            let dy = (0..<out.count).map { _ in generator.normal() }
            for inputs in ["signed", "after ReLU"] {
                let x = (0..<shape.count).map { _ in inputs == "signed" ? generator.normal() : max(0, generator.normal()) }
                let y = Reference.conv2d(x, shape: shape, weight: w, bias: nil, conv: conv)
                let g = Reference.conv2dBackward(x, shape: shape, weight: w, conv: conv, dy: dy)
                let xt = try q.upload(x.map(Float.init), shape: shape), wt = try q.upload(w.map(Float.init), shape: conv.weightShape)
                let dyt = try q.upload(dy.map(Float.init), shape: out)
                for algorithm in conv.applicableAlgorithms {
                    let ws = try Tensor(context: context, shape: [max(1, try conv.workspaceCount(shape, algorithm: algorithm))])
                    let yt = try Tensor(context: context, shape: out), dxt = try Tensor(context: context, shape: shape)
                    let dwt = try Tensor(context: context, shape: conv.weightShape)
                    try conv.forward(q, x: xt, weight: wt, bias: nil, y: yt, workspace: ws, algorithm: algorithm)
                    try conv.backward(q, x: xt, weight: wt, dy: dyt, dx: dxt, dweight: dwt, dbias: nil, workspace: ws,
                                      algorithm: algorithm)
                    rows.append(Row(layer: "\(c)->\(c) \(shape)", inputs: inputs, algorithm: algorithm.rawValue,
                                    forward: relative(try q.read(yt), y), inputGradient: relative(try q.read(dxt), g.dx),
                                    weightGradient: relative(try q.read(dwt), g.dweight)))
                }
            }
        }
        if common.json { return try printJSON(rows) }
        printTable(header: ["layer", "inputs", "algorithm", "forward", "input gradient", "weight gradient"], rows: rows.map {
            [$0.layer, $0.inputs, $0.algorithm, sci($0.forward), sci($0.inputGradient), sci($0.weightGradient)]
        })
    }

    /// ‖a - b‖ / ‖b‖; NaN where a holds one, so that it cannot pass for small.
    private func relative(_ a: [Float], _ b: [Double]) -> Double {
        var diff = 0.0, norm = 0.0
        for (u, v) in zip(a, b) {
            diff += (Double(u) - v) * (Double(u) - v)
            norm += v * v
        }
        return (diff / norm).squareRoot()
    }

    /// Two significant digits, e.g. "3.5e-6".
    private func sci(_ v: Double) -> String {
        guard v.isFinite, v > 0 else { return format(v) }
        var exponent = Int(log10(v).rounded(.down)), mantissa = (v / pow(10, Double(exponent)) * 10).rounded() / 10
        if mantissa >= 10 { (mantissa, exponent) = (mantissa / 10, exponent + 1) }
        return format(mantissa) + "e\(exponent)"
    }
}
