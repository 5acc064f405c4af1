import CLNet
import Foundation
import Testing

/// Inputs the fuzzers of `Fuzz/` found (`Benchmarks/fuzz.sh`), each kept in
/// `Fixtures/fuzz/` with the defect it caught; the parser must refuse it with this message.
@Suite("Fuzzer findings")
struct FuzzRegressionTests {
    enum Parser: Sendable {
        case idx, safetensors, image, cifar
    }

    @Test(arguments: [
        // An IDX header of sizes 4,160,749,567 x 4,294,967,294 x 0 x 134,415,145 with no data:
        // the zero made the product match, so the other sizes went through unchecked.
        ("idx-zero-size", Parser.idx, "a size of 0 holds no data"),
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
            }
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains(message), "\(file): \(String(describing: error))")
    }
}
