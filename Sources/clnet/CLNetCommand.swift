import ArgumentParser
import CLNet
import CLNetCLI

@main
struct CLNetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clnet",
        abstract: "Train and run residual image networks on any OpenCL device.",
        version: CLNet.version,
        subcommands: [Devices.self, Compile.self, Models.self, Run.self, Train.self, Eval.self, Predict.self, Export.self, Prune.self, ERF.self]
    )
}

/// Reports an error the way every subcommand does: the message (with a build log where there is
/// one) on standard error, and a non-zero exit.
func fail(_ error: Error) -> ExitCode {
    printError("clnet: error: \(error)")
    return ExitCode(1)
}
