import CLNet
import Foundation
import Testing

@Suite("SafeTensors: reading, writing, malformed files, strict loading")
struct SafeTensorsTests {
    static func temporaryURL(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("clnet-\(UUID().uuidString)-\(name)")
    }

    /// Builds a file by hand: header JSON and data bytes.
    static func file(_ header: String, _ data: [UInt8]) -> [UInt8] {
        let json = Array(header.utf8)
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes += $0 }
        return bytes + json + data
    }

    @Test func roundTrip() throws {
        var rng = freshGenerator("safetensors round trip")
        let w = randomFloats(2 * 3 * 3 * 3, using: &rng)
        let url = Self.temporaryURL("round.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensors.write([("conv.weight", .float32(w, shape: [2, 3, 3, 3])),
                               ("bn.num_batches_tracked", .int64([42], shape: []))], to: url, metadata: ["format": "pt"])
        let f = try SafeTensors(contentsOf: url)
        #expect(try f.floats("conv.weight") == w)
        #expect(f.entries["conv.weight"]?.shape == [2, 3, 3, 3])
        #expect(try f.integers("bn.num_batches_tracked") == [42])
        #expect(f.entries["bn.num_batches_tracked"]?.shape == [])
        #expect(f.metadata["format"] == "pt")
        // The data section starts 8-byte aligned, as the format asks.
        let bytes = try [UInt8](Data(contentsOf: url))
        let headerLength = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect(headerLength % 8 == 0)
    }

    /// A file written by the reference Python implementation (see Fixtures/README.md).
    @Test func readsTheReferenceImplementationsFile() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/numpy.safetensors")
        let f = try SafeTensors(contentsOf: url)
        #expect(try f.floats("layer1.0.conv1.weight") == [0, 0.25, 0.5, 0.75, 1, 1.25])
        #expect(f.entries["layer1.0.conv1.weight"]?.shape == [2, 3])
        #expect(try f.floats("half") == [1, -2.5, 0.125])
        #expect(try f.integers("bn1.num_batches_tracked") == [7])
        #expect(f.metadata == ["format": "np"])
    }

    @Test func metadataMayHoldAnyKeys() throws {
        let bytes = Self.file(#"{"__metadata__":{"dtype":"F32"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 128, 63])
        let f = try SafeTensors(bytes: bytes)
        #expect(try f.floats("a") == [1] && f.metadata["dtype"] == "F32")
    }

    @Test func halfAndBFloat16ReadAsFloat() throws {
        // F16: 1.0, -2.5, 2^-24 (smallest subnormal), 65504; BF16: 1.0, -0.5.
        let f16: [UInt8] = [0x00, 0x3C, 0x00, 0xC1, 0x01, 0x00, 0xFF, 0x7B]
        let bf16: [UInt8] = [0x80, 0x3F, 0x00, 0xBF]
        let bytes = Self.file(#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}}"#, f16 + bf16)
        let f = try SafeTensors(bytes: bytes)
        #expect(try f.floats("a") == [1, -2.5, Float(sign: .plus, exponent: -24, significand: 1), 65504])
        #expect(try f.floats("b") == [1, -0.5])
    }

    @Test(arguments: [
        ("short", [UInt8](repeating: 0, count: 5), "shorter than the 8-byte"),
        ("huge header", [0, 0, 0, 0, 1, 0, 0, 0] + [UInt8](repeating: 0, count: 16), "over the 100 MB limit"),
        ("header past end", [100, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8), "truncated"),
        ("bad json", SafeTensorsTests.file("{not json", []), "malformed JSON"),
        ("bad dtype", SafeTensorsTests.file(#"{"a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]}}"#, [0, 0]), "dtype U16"),
        ("out of range", SafeTensorsTests.file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, [0, 0, 0, 0]), "truncated"),
        ("size mismatch", SafeTensorsTests.file(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8)), "needs 12 bytes"),
        ("overlap", SafeTensorsTests.file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, [UInt8](repeating: 0, count: 8)), "overlap"),
        ("huge shape", SafeTensorsTests.file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#, []), "too large"),
        ("negative", SafeTensorsTests.file(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, []), "not valid"),
    ] as [(String, [UInt8], String)])
    func malformedFilesThrowClearly(name: String, bytes: [UInt8], message: String) {
        let error = #expect(throws: CLNetError.self) { try SafeTensors(bytes: bytes, label: "test.safetensors") }
        // A missing error has been recorded above; the text checks need one.
        guard let error else { return }
        #expect("\(error)".contains(message), "\(name): \(error)")
        #expect("\(error)".contains("test.safetensors"))
    }

    @Test func failedWriteLeavesNothingAndKeepsThePreviousFile() throws {
        let dir = Self.temporaryURL("dir")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("w.safetensors")
        try SafeTensors.write([("a", .float32([1, 2], shape: [2]))], to: url)
        // A tensor whose values do not fill its shape fails before anything is written.
        #expect(throws: CLNetError.self) { try SafeTensors.write([("a", .float32([1, 2, 3], shape: [2]))], to: url) }
        #expect(try SafeTensors(contentsOf: url).floats("a") == [1, 2])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.safetensors"])
        let missing = URL(fileURLWithPath: "/nonexistent-dir-clnet/x.safetensors")
        #expect(throws: CLNetError.self) { try SafeTensors.write([("a", .float32([1], shape: [1]))], to: missing) }
    }

    /// An executor saves torchvision-style weights and another loads them; loading is strict.
    @Test func executorSavesAndLoadsStrictly() throws {
        var rng = freshGenerator("weights round trip")
        let (graph, _) = try CIFARResNet(n: 1, inChannels: 1).graph(batch: 2, size: 8)
        let context = try Shared.context()
        let a = try Executor(graph: graph, context: context, training: true)
        for p in graph.parameters { try a.setParameter(p.name, randomFloats(p.shape.count, using: &rng)) }
        let url = Self.temporaryURL("model.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try a.save(to: url)
        let file = try SafeTensors(contentsOf: url)
        #expect(file.entries["bn1.num_batches_tracked"]?.dtype == .I64)
        let b = try Executor(graph: graph, context: context, training: false)
        try b.load(file)
        for p in graph.parameters { #expect(try b.parameter(p.name) == a.parameter(p.name), "\(p.name)") }

        // A model of another shape: every problem is listed with both shapes.
        let (other, _) = try CIFARResNet(n: 1, inChannels: 3).graph(batch: 2, size: 8)
        let c = try Executor(graph: other, context: context, training: false)
        let error = #expect(throws: CLNetError.self) { try c.load(file) }
        #expect("\(error!)".contains("conv1.weight") && "\(error!)".contains("[16, 1, 3, 3]") && "\(error!)".contains("[16, 3, 3, 3]"))
        // Missing and unexpected tensors.
        try SafeTensors.write([("conv1.weight", .float32([Float](repeating: 0, count: 144), shape: [16, 1, 3, 3])),
                               ("extra.weight", .float32([1], shape: [1]))], to: url)
        let partial = #expect(throws: CLNetError.self) { try b.load(try SafeTensors(contentsOf: url)) }
        #expect("\(partial!)".contains("missing bn1.weight") && "\(partial!)".contains("unexpected extra.weight"), "\(partial!)")
    }
}
