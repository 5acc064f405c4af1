import ArgumentParser
import CLNet
import Foundation

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build every kernel file for the device, filling the program cache, and report the times.")

    @Option(help: "Device index or name substring (default: CLNET_DEVICE, else the first GPU).")
    var device: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct Report: Encodable {
        var file: String
        var origin: String
        var seconds: Double
    }

    func run() throws {
        var reports: [Report] = []
        do {
            let dev = try device.map { spec throws(CLNetError) in try Device.select(spec) } ?? Device.default
            let context = try Context(device: dev)
            for source in KernelSource.allCases {
                let program = try context.program(source)
                reports.append(Report(file: source.fileName, origin: "\(program.origin)", seconds: program.buildSeconds))
            }
        } catch {
            throw fail(error)
        }
        if json {
            try printJSON(reports)
        } else {
            printTable(header: ["kernel file", "seconds", "from"],
                       rows: reports.map { [$0.file, String(format: "%.3f", $0.seconds), $0.origin] })
        }
    }
}
