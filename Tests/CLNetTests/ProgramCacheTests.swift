import CLNet
import Foundation
import Testing

@Suite("Program cache")
struct ProgramCacheTests {
    /// Every .cl file in Kernels/ is embedded and named by `KernelSource`, and builds.
    @Test func everyKernelFileIsEmbedded() throws {
        let kernels = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Kernels").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: kernels.path).filter { $0.hasSuffix(".cl") }
        #expect(Set(files) == Set(KernelSource.allCases.map(\.fileName) + ["Common.cl"]))
        let context = try Shared.context()
        for source in KernelSource.allCases {
            let onDisk = try String(contentsOf: kernels.appendingPathComponent(source.fileName), encoding: .utf8)
            #expect(source.fileText == onDisk, "\(source.fileName) embedded text differs from the file")
            _ = try context.program(source)
        }
    }

    @Test func secondBuildInProcessIsACacheHit() throws {
        let context = try Shared.context()
        let first = try context.program(.util, defines: ["CACHE_PROBE": "1"])
        let count = context.cachedProgramCount
        let clock = ContinuousClock()
        var second: Program?
        let elapsed = try clock.measure { second = try context.program(.util, defines: ["CACHE_PROBE": "1"]) }
        #expect(second === first)
        #expect(context.cachedProgramCount == count)
        #expect(elapsed < .milliseconds(5), "a cached lookup took \(elapsed)")
        let other = try context.program(.util, defines: ["CACHE_PROBE": "2"])
        #expect(other !== first)
        #expect(other.options.contains("-DCACHE_PROBE=2"))
    }

    @Test func diskCacheServesDetectsCorruptionAndRebuilds() throws {
        let device = try Shared.context().device
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-cache-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let cache = ProgramDiskCache(directory: root, device: device)
        let defines = ["DISK_PROBE": "\(UInt32.random(in: 0...UInt32.max))"]
        var context = try Context(device: device, diskCache: .custom(cache))
        func build() throws -> Program {
            // A fresh context has an empty in-memory cache, as a new process would.
            context = try Context(device: device, diskCache: .custom(cache))
            return try context.program(.util, defines: defines)
        }
        #expect(try build().origin == .compiled(cacheNote: "not in disk cache"))
        let cached = try build()
        #expect(cached.origin == .diskCache)
        try expectFillWorks(cached, context)

        let url = cache.fileURL(source: KernelSource.util.text, options: cached.options)
        var bytes = try [UInt8](Data(contentsOf: url))
        let original = bytes

        // Flip one byte of the binary: the checksum catches it.
        bytes[bytes.count - 9] ^= 0xff
        try Data(bytes).write(to: url)
        let afterCorrupt = try build()
        guard case let .compiled(note?) = afterCorrupt.origin else {
            Issue.record("corrupt cache file was used: \(afterCorrupt.origin)")
            return
        }
        #expect(note.contains("corrupt"))
        try expectFillWorks(afterCorrupt, context)
        #expect(try build().origin == .diskCache)

        // Truncated, garbage, and written for another driver: each is rebuilt.
        try Data(original.prefix(original.count / 2)).write(to: url)
        #expect("\(try build().origin)".contains("truncated"))
        try Data("not a cache file".utf8).write(to: url)
        #expect("\(try build().origin)".contains("no CLNet header"))
        var stale = original
        if let at = stale.indices.dropFirst(12).first(where: { stale[$0] == UInt8(ascii: "=") }) {
            stale[at + 1] ^= 0x20  // changes a letter of the device name in the header
        }
        try Data(stale).write(to: url)
        #expect("\(try build().origin)".contains("another device"))
        #expect(try build().origin == .diskCache)
    }

    /// A second process builds faster from the disk cache; PoCL's own cache is off for both runs
    /// so that only CLNet's cache can make the difference.
    @Test func secondProcessBuildsFaster() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-cache-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        var env = ProcessInfo.processInfo.environment
        env["CLNET_CACHE_DIR"] = root.path
        env["POCL_KERNEL_CACHE"] = "0"
        let cold = try runCompile(env)
        let warm = try runCompile(env)
        #expect(cold.allSatisfy { $0.origin.hasPrefix("compiled") })
        #expect(warm.allSatisfy { $0.origin == "disk cache" })
        let coldTotal = cold.map(\.seconds).reduce(0, +), warmTotal = warm.map(\.seconds).reduce(0, +)
        print("program build: cold \(coldTotal) s, from disk cache \(warmTotal) s")
        #expect(warmTotal < coldTotal / 2)
        env["CLNET_CACHE"] = "0"
        #expect(try runCompile(env).allSatisfy { $0.origin == "compiled" })
    }

    /// Two processes filling one empty disk cache at the same time both succeed, and a third
    /// finds every program there whole: entries are written to a temporary file and renamed.
    @Test func twoProcessesShareTheDiskCache() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-cache-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        var env = ProcessInfo.processInfo.environment
        env["CLNET_CACHE_DIR"] = root.path
        env["POCL_KERNEL_CACHE"] = "0"
        let processes = (0..<2).map { _ in
            let p = Process()
            p.executableURL = productsDirectory().appendingPathComponent("clnet")
            p.arguments = ["compile", "--json"]
            p.environment = env
            p.standardOutput = Pipe()
            p.standardError = Pipe()
            return p
        }
        for p in processes { try p.run() }
        for p in processes {
            _ = (p.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        #expect(try runCompile(env).allSatisfy { $0.origin == "disk cache" })
    }

    struct Report: Decodable {
        var file: String
        var origin: String
        var seconds: Double
    }

    private func runCompile(_ env: [String: String]) throws -> [Report] {
        let process = Process()
        process.executableURL = productsDirectory().appendingPathComponent("clnet")
        process.arguments = ["compile", "--json"]
        process.environment = env
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return try JSONDecoder().decode([Report].self, from: data)
    }

    private func expectFillWorks(_ program: Program, _ context: Context) throws {
        let queue = try context.makeQueue()
        let buffer = try context.buffer(floats: 5)
        try queue.enqueue(try program.kernel("fill_f32"), [.buffer(buffer), .uint(0), .uint(5), .float(2.5)],
                          global: [5])
        #expect(try queue.read(buffer) == [Float](repeating: 2.5, count: 5))
    }
}
