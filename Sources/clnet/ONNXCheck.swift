import CLNet
import Foundation

/// `clnet export --onnx --check`: ONNX's checker and ONNX Runtime on the exported model, whose
/// logits on a random batch must agree with CLNet's, at the batch CLNet ran and at batch 1
/// through the same file (the batch dimension is symbolic).
enum ONNXCheck {
    /// The relative error allowed between ONNX Runtime's logits and CLNet's (both float32).
    static let bound = 1e-4

    static let script = #"""
import sys
import numpy as np
try:
    import onnx, onnxruntime as ort
except ImportError as e:
    print(f"--check needs Python's onnx and onnxruntime ({e}); pip install onnx onnxruntime", file=sys.stderr)
    sys.exit(3)
path, inputs, logits, n, c, h, w, k, bound = sys.argv[1:10]
n, c, h, w, k, bound = int(n), int(c), int(h), int(w), int(k), float(bound)
onnx.checker.check_model(onnx.load(path), full_check=True)
x = np.fromfile(inputs, dtype="<f4").reshape(n, c, h, w)
want = np.fromfile(logits, dtype="<f4").reshape(n, k).astype(np.float64)
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
errors = []
for batch in (x, x[:1]):
    # Per-pixel outputs (segmentation maps, super-resolved images) compare flat per sample.
    got = session.run(["logits"], {"input": batch})[0].astype(np.float64).reshape(len(batch), -1)
    ref = want[: len(batch)]
    errors.append(float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)))
print(f"onnx.checker passed; ONNX Runtime {ort.__version__} against CLNet: relative error "
      f"{errors[0]:.2e} at batch {n}, {errors[1]:.2e} at batch 1 (bound {bound:g})")
sys.exit(0 if all(e <= bound for e in errors) else 4)
"""#

    /// Runs the check on the model at `path`: CLNet's logits of `spec` with `parameters` on a
    /// random batch against ONNX Runtime's. Returns the check's line; throws when it fails.
    static func run(path: String, spec: String, size: Int, parameters: [String: [Float]], device: Device) throws -> String {
        let batch = 3
        let (graph, logits) = try ModelSpec.graph(spec, batch: batch, size: size, loss: false)
        let executor = try Executor(graph: graph, context: try Context(device: device), training: false, keep: [logits])
        for p in graph.parameters { try executor.setParameter(p.name, parameters[p.name]!) }
        let x = graph.shape(of: graph.inputs[0].value)
        var rng = SeededGenerator(seed: 17)
        let input = (0..<x.count).map { _ in Float(2 * rng.uniform() - 1) }
        try executor.forward(["input": input])
        let z = try executor.read(logits)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("clnet-onnx-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func raw(_ v: [Float]) -> Data { v.withUnsafeBufferPointer { Data(buffer: $0) } }
        try raw(input).write(to: dir.appendingPathComponent("input.f32"))
        try raw(z).write(to: dir.appendingPathComponent("logits.f32"))
        try Data(script.utf8).write(to: dir.appendingPathComponent("check.py"))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", dir.appendingPathComponent("check.py").path, path,
                             dir.appendingPathComponent("input.f32").path, dir.appendingPathComponent("logits.f32").path]
            + [x.n, x.c, x.h, x.w, z.count / x.n].map(String.init) + ["\(bound)"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch {
            throw CLNetError.invalidArgument("--check runs python3, which could not be started (\(error)); install Python 3 with onnx and onnxruntime")
        }
        // Standard error on another thread, so that neither pipe fills while the other is read.
        let errors = ErrorText()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            errors.set(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
            done.signal()
        }
        let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        done.wait()
        let problems = errors.text
        let line = printed.trimmingCharacters(in: .whitespacesAndNewlines)
        switch process.terminationStatus {
        case 0: return line
        case 4: throw CLNetError.invalidArgument("--check: ONNX Runtime's logits disagree with CLNet's: \(line)")
        case 3: throw CLNetError.invalidArgument(problems.trimmingCharacters(in: .whitespacesAndNewlines))
        default:
            let last = problems.split(separator: "\n").last.map(String.init) ?? "status \(process.terminationStatus)"
            throw CLNetError.invalidArgument("--check: the ONNX checker or ONNX Runtime refused the model: \(last)")
        }
    }
}

/// What the check's standard error said, handed from the thread that read it.
private final class ErrorText: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ text: String) { lock.lock(); value = text; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return value }
}
