import ArgumentParser
import CLNet
import CLNetCLI

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every OpenCL platform and device, and which one CLNet uses by default.")

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let devices: [Device]
        let chosen: Device
        do {
            devices = try Device.all()
            chosen = try Device.default
        } catch {
            throw fail(error)
        }
        if json {
            struct Listing: Encodable {
                var defaultIndex: Int
                var devices: [DeviceInfo]
            }
            try printJSON(Listing(defaultIndex: chosen.info.index, devices: devices.map(\.info)))
            return
        }
        let mib = { (bytes: Int) in "\(bytes >> 20) MiB" }
        let rows = devices.map { d -> [String] in
            let i = d.info
            return [(d === chosen ? "*" : " ") + "\(i.index)", i.type, i.name, i.platformName, i.driverVersion,
                    i.openCLCVersion, "\(i.computeUnits)", mib(i.globalMemoryBytes), mib(i.maxAllocationBytes),
                    "\(i.localMemoryBytes >> 10) KiB"]
        }
        printTable(header: ["#", "type", "device", "platform", "driver", "OpenCL C", "CUs", "global", "max alloc",
                            "local"], rows: rows)
        print("* default device (override with CLNET_DEVICE=<index or name>)")
    }
}
