#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// CLNet's on-disk cache of compiled program binaries, so that a second process starts fast on
/// drivers that keep no cache of their own.
///
/// Files live under `CLNET_CACHE_DIR`, else `$XDG_CACHE_HOME/clnet`, else `~/.cache/clnet`, in one
/// folder per (device name, driver version, CLNet version), one file per (source, options). Each
/// file repeats its full key and a checksum of the binary: a file that is truncated, corrupt or
/// written for another key is reported and rebuilt, never handed to the driver. Files are written
/// to a temporary name and renamed, so a reader never sees half a file and two processes can
/// share the folder. `CLNET_CACHE=0` turns the cache off.
public struct ProgramDiskCache: Sendable {
    /// The folder that holds this device's cache files.
    public let directory: URL
    let deviceKey: String

    /// The outcome of a lookup.
    enum Lookup {
        case hit([UInt8])
        case miss
        case invalid(String)
    }

    private static let magic = Array("CLNETPB1".utf8)

    /// A cache in `directory` for `device`.
    public init(directory: URL, device: Device) {
        deviceKey = "device=\(device.info.name)\ndriver=\(device.info.driverVersion)\nclnet=\(CLNet.version)"
        let slug = device.info.name.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        self.directory = directory.appendingPathComponent(
            String(slug.prefix(40)) + "-" + String(fnv1a64(deviceKey), radix: 16), isDirectory: true)
    }

    /// The cache a context uses by default: nil when `CLNET_CACHE=0` or when the driver keeps its
    /// own cache (NVIDIA's does).
    public static func defaultCache(for device: Device) -> ProgramDiskCache? {
        let env = ProcessInfo.processInfo.environment
        if env["CLNET_CACHE"] == "0" || device.driverCachesPrograms { return nil }
        return ProgramDiskCache(directory: defaultRoot(env), device: device)
    }

    static func defaultRoot(_ env: [String: String]) -> URL {
        if let dir = env["CLNET_CACHE_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir, isDirectory: true) }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty {
            return URL(fileURLWithPath: xdg, isDirectory: true).appendingPathComponent("clnet", isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/clnet", isDirectory: true)
    }

    /// The file that holds the binary for `source` built with `options`.
    public func fileURL(source: String, options: String) -> URL {
        let name = String(fnv1a64(source), radix: 16) + "-" + String(fnv1a64(options), radix: 16) + ".bin"
        return directory.appendingPathComponent(name)
    }

    private func header(source: String, options: String) -> [UInt8] {
        Array("\(deviceKey)\nsource=\(String(fnv1a64(source), radix: 16)):\(source.utf8.count)\noptions=\(options)".utf8)
    }

    func load(source: String, options: String) -> Lookup {
        let url = fileURL(source: source, options: options)
        guard let data = FileManager.default.contents(atPath: url.path) else { return .miss }
        let bytes = [UInt8](data)
        let expected = header(source: source, options: options)
        // magic, UInt32 header length, header, UInt64 payload length, UInt64 payload checksum, payload
        var at = 0
        func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, at + n <= bytes.count else { return nil }
            defer { at += n }
            return bytes[at..<at + n]
        }
        func integer(_ n: Int) -> UInt64? {
            guard let slice = take(n) else { return nil }
            return slice.reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        guard let magic = take(Self.magic.count), Array(magic) == Self.magic else {
            return .invalid("cache file \(url.lastPathComponent) has no CLNet header")
        }
        guard let headerLength = integer(4), let head = take(Int(headerLength)), Array(head) == expected else {
            return .invalid("cache file \(url.lastPathComponent) was written for another device, driver or source")
        }
        guard let length = integer(8), let checksum = integer(8), length > 0,
              let payload = take(Int(clamping: length)), at == bytes.count
        else { return .invalid("cache file \(url.lastPathComponent) is truncated") }
        guard fnv1a64(payload) == checksum else {
            return .invalid("cache file \(url.lastPathComponent) is corrupt (checksum mismatch)")
        }
        return .hit(Array(payload))
    }

    /// Writes the file atomically. A failure to write only costs the next process a rebuild, so it
    /// is not reported.
    func store(source: String, options: String, binary: [UInt8]) {
        let head = header(source: source, options: options)
        var bytes = Self.magic
        func append(_ value: UInt64, _ n: Int) {
            for i in 0..<n { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
        }
        append(UInt64(head.count), 4)
        bytes += head
        append(UInt64(binary.count), 8)
        append(fnv1a64(binary), 8)
        bytes += binary
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(bytes).write(to: fileURL(source: source, options: options), options: .atomic)
        } catch {
            return
        }
    }
}

/// Facts about this build of CLNet.
public enum CLNet {
    /// CLNet's version; part of the disk-cache key, so a new version never trusts an old binary.
    public static let version = "0.1.0"
}
