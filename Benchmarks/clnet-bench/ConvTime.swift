import ArgumentParser
import CLNet
import CLNetCLI

/// One convolution's algorithms, each timed in each direction as an executor times them when it
/// chooses (`Conv2D.choose`: one untimed run, then the best of five, so `--warmup` and `--iters`
/// do not apply), without the cache: to see why a layer runs what it runs, and to compare a
/// kernel change on one layer.
struct ConvTime: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Time every algorithm of one convolution in each direction (forward, input gradient, weight gradient), as an executor does to choose.")

    @OptionGroup var common: Common

    @Option(help: "Input shape N,C,H,W.")
    var input = "8,64,56,56"

    @Option(help: "Output channels.")
    var out = 64

    @Option(help: "Kernel size.")
    var kernel = 3

    @Option(help: "Stride.")
    var stride = 1

    @Option(help: "Padding.")
    var padding = 1

    @Option(help: "Dilation.")
    var dilation = 1

    @Option(help: "Groups.")
    var groups = 1

    @Flag(help: "The forward pass alone.")
    var inference = false

    func run() throws {
        let dims = input.split(separator: ",").compactMap { Int($0) }
        guard dims.count == 4 else {
            printError("clnet-bench conv: --input needs four sizes N,C,H,W, not '\(input)'")
            throw ExitCode(2)
        }
        let conv = Conv2D(inChannels: dims[1], outChannels: out, kernel: kernel, stride: stride, padding: padding,
                          dilation: dilation, groups: groups)
        let context = try common.context()
        do {
            let choice = try conv.timeAlgorithms(on: context, input: Shape(dims), training: !inference)
            if common.json {
                return try printJSON(["convolution": "\(conv)", "input": "\(Shape(dims))", "forward": choice.forward.rawValue,
                                      "dx": choice.data.rawValue, "dw": choice.weights.rawValue, "timings": choice.reason])
            }
            print("\(conv) on \(Shape(dims)), \(context.device.info.name)")
            print("fastest: forward \(choice.forward.rawValue), dx \(choice.data.rawValue), dw \(choice.weights.rawValue)")
            print(choice.reason)
        } catch {
            printError("clnet-bench conv: error: \(error)")
            throw ExitCode(1)
        }
    }
}
