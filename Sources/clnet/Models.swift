import ArgumentParser
import CLNet
import CLNetCLI

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every model with its parameter count and forward GFLOPs at its default input.")

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Row: Encodable {
        var name: String
        var parameters: Int
        var gflops: Double
        var inputSize: Int
    }

    func run() throws {
        var rows: [Row] = []
        do {
            for name in ModelSpec.names {
                let size = ModelSpec.defaultSize(name)
                let graph = try ModelSpec.graph(name, batch: 1, size: size, loss: false).graph
                rows.append(Row(name: name, parameters: graph.trainableParameterCount, gflops: graph.forwardFLOPs / 2e9,
                                inputSize: size))
            }
        } catch {
            throw fail(error)
        }
        if json { return try printJSON(rows) }
        printTable(header: ["model", "parameters", "GMACs", "input"], rows: rows.map {
            [$0.name, "\($0.parameters)", format($0.gflops, 3), "\($0.inputSize)x\($0.inputSize)"]
        })
        print("GMACs: multiply-adds of one forward pass on one image, in billions (as torchvision quotes GFLOPs)")
    }
}
