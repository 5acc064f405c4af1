import ArgumentParser
import CLNet

/// The `--device` option of every command that runs on an OpenCL device.
struct DeviceOption: ParsableArguments {
    @Option(name: .customLong("device"),
            help: "Device index or name substring from `clnet devices` (default: CLNET_DEVICE, else the first GPU).")
    var name: String?

    /// The device the option names, or the default one.
    func select() throws(CLNetError) -> Device {
        if let name { return try Device.select(name) }
        return try Device.default
    }

    /// A context on that device.
    func context() throws(CLNetError) -> Context { try Context(device: select()) }
}
