import CLNet
import Foundation
import Testing

/// Inputs the fuzzers of `Fuzz/` found (`Benchmarks/fuzz.sh`), each kept in
/// `Fixtures/fuzz/` with the defect it caught; the parser must refuse it with this message.
@Suite("Fuzzer findings")
struct FuzzRegressionTests {
    enum Parser: Sendable {
        case idx, safetensors, image, cifar, modelspec
    }

    @Test(arguments: [
        // An IDX header of sizes 4,160,749,567 x 4,294,967,294 x 0 x 134,415,145 with no data:
        // the zero made the product match, so the other sizes went through unchecked.
        ("idx-zero-size", Parser.idx, "a size of 0 holds no data"),
        // A 91-block selective-kernel ResNet with a garbled key: it was built (over 10 s under
        // AddressSanitizer) before the key was refused. Every option is now read and every key
        // checked before anything is built (the 40,000-block specification in ModelTests would
        // take minutes otherwise), and `layers=.91`, which read as 91, is refused first.
        ("modelspec-unknown-key-after-build", Parser.modelspec, "layers=.91 must be up to 8 positive integers"),
    ] as [(String, Parser, String)])
    func findingIsRefused(file: String, parser: Parser, message: String) throws {
        let url = PredictTests.fixtures.appendingPathComponent("fuzz/\(file)")
        let bytes = [UInt8](try Data(contentsOf: url))
        let error = #expect(throws: CLNetError.self) {
            switch parser {
            case .idx: _ = try IDX.parse(file: bytes, label: file)
            case .safetensors: _ = try SafeTensors(bytes: bytes, label: file)
            case .image: _ = try ImageFile.decode(bytes, name: file)
            case .cifar: _ = try CIFAR.records(bytes, classes: 10, label: file)
            case .modelspec: _ = try ModelSpec.graph(String(decoding: bytes, as: UTF8.self), batch: 1, size: 64, loss: false)
            }
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(file): \(String(describing: error))")
    }

    /// `resnet:,layers=ne,layers=2.82ne,layers=2.82.82.82`: the last `layers` wins, a valid
    /// 248-block ResNet, whose graph took over 10 s to build under AddressSanitizer because every
    /// node appended looked for the loss, and every parameter for its name, across the whole
    /// graph so far. The builder now keeps both at hand; the input must build.
    @Test func quadraticBuildFinishes() throws {
        let url = PredictTests.fixtures.appendingPathComponent("fuzz/modelspec-quadratic-build")
        let spec = String(decoding: try Data(contentsOf: url), as: UTF8.self)
        let graph = try ModelSpec.graph(spec, batch: 1, size: 64, loss: false).graph
        #expect(graph.nodes.filter { $0.name.hasSuffix(".add") }.count == 2 + 82 + 82 + 82)
    }
}
