import CLNet
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A command's --weights file, read once, and what its metadata says about the model.
struct LoadedWeights {
    let path: String
    let file: SafeTensors
    /// Nil for files without CLNet's metadata (PyTorch's).
    let info: WeightsInfo?

    init(_ path: String) throws {
        self.path = path
        file = try SafeTensors(contentsOf: URL(fileURLWithPath: path))
        info = try WeightsInfo.read(file, path: path)
    }

    /// The model to build: the file's, checked against `given` when both are there.
    func model(_ given: String?) throws -> String {
        try WeightsInfo.model(given: given, info: info, file: path)
    }
}
