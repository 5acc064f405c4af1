import ArgumentParser
import CLNet
import CLNetCLI

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build every kernel file for the device, filling the program cache, and report the times.")

    @OptionGroup var device: DeviceOption

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Report: Encodable {
        var file: String
        var origin: String
        var seconds: Double
        /// The same request again in this process: a lookup in the context's program cache.
        var cachedSeconds: Double
    }

    func run() throws {
        var reports: [Report] = []
        do {
            let context = try device.context()
            for source in KernelSource.allCases {
                let program = try context.program(source)
                let again = ContinuousClock.now
                _ = try context.program(source)
                reports.append(Report(file: source.fileName, origin: "\(program.origin)", seconds: program.buildSeconds,
                                      cachedSeconds: CLNetCLI.seconds(since: again)))
            }
        } catch {
            throw fail(error)
        }
        if json {
            try printJSON(reports)
        } else {
            printTable(header: ["kernel file", "build s", "from", "second request s"],
                       rows: reports.map { [$0.file, format($0.seconds, 3), $0.origin, format($0.cachedSeconds, 6)] })
        }
    }
}
