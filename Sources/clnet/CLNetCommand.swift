import ArgumentParser
import CLNet
import Foundation

@main
struct CLNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clnet",
        abstract: "Train and run residual image networks on any OpenCL device.",
        version: CLNet.version,
        subcommands: [Devices.self, Compile.self]
    )
}

/// Prints an error the way every subcommand reports one: one line (plus a build log where there
/// is one) on standard error, and a non-zero exit.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("clnet: error: \(error)\n".utf8))
    return ExitCode(1)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
