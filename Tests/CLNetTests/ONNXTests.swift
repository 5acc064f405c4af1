@testable import CLNet
import Foundation
import Testing

/// `clnet export --onnx`: each family exported and run in ONNX Runtime by `--check`, whose
/// logits must agree with CLNet's within 1e-4 at batch 3 and batch 1 through one file, after
/// ONNX's checker (Python's onnx and onnxruntime, which `.ci/run` installs); torchvision's
/// ResNet-18 and ResNet-50 against PyTorch's logits; and bad input.
@Suite("ONNX export")
struct ONNXTests {
    static func temporary() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-onnx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Weights of `spec` from the fixture formula, in a file without metadata.
    static func weights(_ spec: String, size: Int, in dir: URL) throws -> URL {
        let (graph, _) = try ModelSpec.graph(spec, batch: 1, size: size)
        let url = dir.appendingPathComponent("w.safetensors")
        try SafeTensors.write(graph.parameters.map { p in
            (p.name, .float32(fixtureValues(p.name, count: p.shape.count, role: p.role, fanIn: p.shape.sampleCount), shape: p.shape.dims))
        }, to: url)
        return url
    }

    /// One model of each family, with the export variants it takes.
    @Test(arguments: [
        ("resnet:block=basic,layers=1.1,width=8,stem=cifar,classes=5", ["--fold-bn", "--rm"]),
        ("resnet:block=bottleneck,layers=1.1,width=8,classes=5", ["--fold-bn"]),
        ("resnet:block=bottleneck,layers=1.1,groups=4,width=4,stem=cifar,classes=5", []),
        ("preact_resnet:block=basic,layers=1.1,width=8,stem=cifar,classes=5", []),
        ("wrn:depth=10,widen=2,dropout=0.3,classes=5", []),
        ("densenet:growth=4,blocks=2.2,init=8,bn_size=2,classes=5", ["--fold-bn"]),
        ("resnet:block=bottleneck,layers=1.1,width=8,se=4,stem=cifar,classes=5", []),
        ("resnet:block=bottleneck,layers=1.1,groups=4,width=4,sk=4,stem=cifar,classes=5", []),
        // Selective kernels in a basic block, each path on half the input (as timm's skresnet18,
        // with the paper's attention width).
        ("resnet:block=basic,layers=1.1,sk=8,sk_split=1,stem=cifar,classes=5", []),
        ("resnet:block=basic,layers=1.1,width=8,act=prelu,stem=cifar,classes=5", []),
        ("resnet:block=bottleneck,layers=1.1.1.1,width=8,dilation=0.1.1,classes=5", []),
        ("resnet:block=basic,layers=1.1,width=8,norm=group:4,stem=cifar,classes=5", []),
        ("cifar_resnet:depth=8,classes=5", ["--rm"]),
        ("cifar_resnet:depth=8,norm=none,classes=5", []),
        ("repvgg:layers=1.1.1.1.1,a=0.125,b=0.0625,stem=cifar,cascade=1,classes=5", ["--reparam"]),
        // DCLS is written as plain convolutions with the built kernels.
        ("resnet:block=basic,layers=1.1,width=8,stem=cifar,dcls=2,dcls_count=4,classes=5", ["--fold-bn"]),
        // Resize (bilinear, to a size), Mul; DRRN's shared convolutions; a per-pixel map out.
        ("attention_cifar:modules=1.1.1,width=2,classes=5", []),
        ("drrn:b=1,u=3,width=8", []),
        ("denseaspp:growth=4,blocks=2.2.2.2,init=8,bn_size=2,d0=8,d1=4,rates=1.2,classes=5", []),
    ] as [(String, [String])])
    func familyRunsInONNXRuntime(spec: String, variants: [String]) throws {
        let dir = try Self.temporary()
        defer { try? FileManager.default.removeItem(at: dir) }
        let size = spec.contains("stem=cifar") || spec.hasPrefix("cifar") || spec.hasPrefix("wrn") ? 16 : 48
        let w = try Self.weights(spec, size: size, in: dir)
        for variant in [[]] + variants.map({ [$0] }) {
            let out = dir.appendingPathComponent("m.onnx")
            let r = try runTool("clnet", ["export", "--model", spec, "--weights", w.path, "--onnx", "--check", "--image-size", "\(size)",
                                          "--output", out.path] + variant)
            #expect(r.status == 0, "\(spec) \(variant): \(r.stderr)")
            let text = String(decoding: r.stdout, as: UTF8.self)
            #expect(text.contains("onnx.checker passed") && FileManager.default.fileExists(atPath: out.path), "\(text)")
            print("\(spec) \(variant): \(text.split(separator: "\n").last ?? "")")
        }
    }

    /// Deformable convolutions are ONNX's DeformConv, which opset 19 brought: the default opset
    /// refuses them, naming the layer and the opset, and writes nothing; opset 19 runs in ONNX
    /// Runtime as in CLNet (v1, and v2 with offset groups and grouped convolutions).
    @Test(arguments: [
        "resnet:block=basic,layers=1.1,stem=cifar,deform=2,classes=5",
        "resnet:block=bottleneck,layers=1.1,groups=4,width=4,stem=cifar,deform=1.2,dcn=v2,deform_groups=2,classes=5",
    ])
    func deformableConvolutionsNeedOpset19(spec: String) throws {
        let dir = try Self.temporary()
        defer { try? FileManager.default.removeItem(at: dir) }
        let w = try Self.weights(spec, size: 16, in: dir)
        let out = dir.appendingPathComponent("m.onnx")
        let common = ["export", "--model", spec, "--weights", w.path, "--onnx", "--image-size", "16", "--output", out.path]
        let refused = try runTool("clnet", common)
        #expect(refused.status != 0 && refused.stderr.contains("deformable convolution") && refused.stderr.contains("opset 19"),
                "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
        let r = try runTool("clnet", common + ["--opset", "19", "--check"])
        #expect(r.status == 0, "\(r.stderr)")
        let text = String(decoding: r.stdout, as: UTF8.self)
        #expect(text.contains("onnx.checker passed"), "\(text)")
        print("\(spec): \(text.split(separator: "\n").last ?? "")")
    }

    /// torchvision's ResNet-18 and ResNet-50, weights from the fixture formula: ONNX Runtime on
    /// CLNet's file against PyTorch's eval-mode logits (`Fixtures/make_onnx_fixtures.py`), at
    /// batch 7 and batch 1 through the same file.
    @Test(arguments: ["resnet18", "resnet50"])
    func torchvisionLogits(model: String) throws {
        let fixture = try SafeTensors(contentsOf: PredictTests.fixtures.appendingPathComponent("pytorch_onnx_\(model).safetensors"))
        let dir = try Self.temporary()
        defer { try? FileManager.default.removeItem(at: dir) }
        let size = Int(try #require(fixture.metadata["size"]))!
        let w = try Self.weights(model, size: size, in: dir)
        let out = dir.appendingPathComponent("\(model).onnx")
        let r = try runTool("clnet", ["export", "--model", model, "--weights", w.path, "--onnx", "--image-size", "\(size)",
                                      "--output", out.path])
        try #require(r.status == 0, "\(r.stderr)")
        let input = fixtureValues(try #require(fixture.metadata["input"]), count: 7 * 3 * size * size, role: nil, fanIn: 1)
        let inputFile = dir.appendingPathComponent("x.f32")
        try input.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: inputFile)
        let script = """
            import sys, numpy as np, onnxruntime as ort
            s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
            x = np.fromfile(sys.argv[2], dtype="<f4").reshape(7, 3, \(size), \(size))
            np.concatenate([s.run(["logits"], {"input": x})[0], s.run(["logits"], {"input": x[:1]})[0]]).astype("<f4").tofile(sys.argv[3])
            """
        let result = dir.appendingPathComponent("z.f32")
        let run = try runProgram("/usr/bin/env", ["python3", "-c", script, out.path, inputFile.path, result.path])
        try #require(run.status == 0, "ONNX Runtime (pip install onnxruntime): \(run.stderr)")
        let z = try Data(contentsOf: result).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let want = try fixture.floats("logits")
        let k = want.count / 7
        let batch7 = relativeError(Array(z[0..<(7 * k)]), want), batch1 = relativeError(Array(z[(7 * k)...]), Array(want[0..<k]))
        #expect(batch7 <= 1e-4 && batch1 <= 1e-4, "\(model): relative error \(batch7) at batch 7, \(batch1) at batch 1")
        print("\(model) through ONNX Runtime against PyTorch: \(batch7) at batch 7, \(batch1) at batch 1")
    }

    /// The encoder against the protobuf encoding guide's own examples.
    @Test func protobufEncoding() {
        var m = ProtoMessage()
        m.int(1, 150)
        #expect(m.bytes == [0x08, 0x96, 0x01])
        var s = ProtoMessage()
        s.string(2, "testing")
        #expect(s.bytes == [0x12, 0x07] + Array("testing".utf8))
        var nested = ProtoMessage()
        nested.message(3, m)
        #expect(nested.bytes == [0x1A, 0x03, 0x08, 0x96, 0x01])
        var packed = ProtoMessage()
        packed.packedInts(4, [3, 270, 86942])
        #expect(packed.bytes == [0x22, 0x06, 0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05])
        // Negative int64: ten bytes of two's complement.
        var negative = ProtoMessage()
        negative.int(1, -1)
        #expect(negative.bytes == [0x08] + [UInt8](repeating: 0xFF, count: 9) + [0x01])
        var f = ProtoMessage()
        f.float(2, 1.5)
        #expect(f.bytes == [0x15, 0x00, 0x00, 0xC0, 0x3F])
    }

    /// An unknown model, weights of another model, an unwritable path and a bad opset each stop
    /// with a message, and no file is written.
    @Test func badInputWritesNothing() throws {
        let dir = try Self.temporary()
        defer { try? FileManager.default.removeItem(at: dir) }
        let w = try Self.weights("cifar_resnet:depth=8,classes=5", size: 16, in: dir)
        let out = dir.appendingPathComponent("m.onnx")
        let cases: [([String], String)] = [
            (["--model", "resnet7"], "resnet7"),
            (["--model", "cifar_resnet:depth=14,classes=5"], "does not match the model"),
            (["--model", "cifar_resnet:depth=8,classes=5", "--opset", "9"], "opset 9"),
        ]
        for (arguments, message) in cases {
            let r = try runTool("clnet", ["export", "--weights", w.path, "--onnx", "--output", out.path] + arguments)
            #expect(r.status != 0 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
        let blocked = dir.appendingPathComponent("no/such/folder/m.onnx")
        let r = try runTool("clnet", ["export", "--model", "cifar_resnet:depth=8,classes=5", "--weights", w.path, "--onnx",
                                      "--output", blocked.path])
        #expect(r.status != 0 && r.stderr.contains(blocked.path) && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
