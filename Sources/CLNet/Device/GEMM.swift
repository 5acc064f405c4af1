import CCLBlast
import COpenCL
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// Single-precision matrix products through CLBlast, on row-major matrices.
///
/// `C = alpha * op(A) * op(B) + beta * C` with `op(A)` of shape m x k and `op(B)` of shape k x n.
/// Offsets and leading dimensions are in elements; a leading dimension left nil is the dense one.
extension CommandQueue {
    /// One matrix product. Runs after `waitFor` and everything enqueued earlier on this queue.
    @discardableResult
    public func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: Buffer, aOffset: Int = 0, lda: Int? = nil,
                     b: Buffer, bOffset: Int = 0, ldb: Int? = nil,
                     beta: Float = 0, c: Buffer, cOffset: Int = 0, ldc: Int? = nil,
                     waitFor: [Event] = []) throws(CLNetError) -> Event {
        try gemmStridedBatched(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, aOffset: aOffset, lda: lda, strideA: 0, b: b, bOffset: bOffset, ldb: ldb,
                               strideB: 0, beta: beta, c: c, cOffset: cOffset, ldc: ldc, strideC: 0,
                               batch: 1, waitFor: waitFor)
    }

    /// `batch` matrix products whose operands sit `strideA`, `strideB` and `strideC` elements apart
    /// (grouped convolution runs one per group). A batch of one is a plain GEMM.
    @discardableResult
    public func gemmStridedBatched(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                                   alpha: Float = 1, a: Buffer, aOffset: Int = 0, lda: Int? = nil, strideA: Int,
                                   b: Buffer, bOffset: Int = 0, ldb: Int? = nil, strideB: Int,
                                   beta: Float = 0, c: Buffer, cOffset: Int = 0, ldc: Int? = nil, strideC: Int,
                                   batch: Int, waitFor: [Event] = []) throws(CLNetError) -> Event {
        guard m > 0, n > 0, k > 0, batch > 0 else {
            throw .invalidArgument("GEMM needs positive sizes; got m=\(m) n=\(n) k=\(k) batch=\(batch)")
        }
        // Row-major: op(A) is m x k, stored k x m when transposed.
        let (aRows, aCols) = transposeA ? (k, m) : (m, k)
        let (bRows, bCols) = transposeB ? (n, k) : (k, n)
        let lda = lda ?? aCols, ldb = ldb ?? bCols, ldc = ldc ?? n
        try checkOperand("A", buffer: a, offset: aOffset, rows: aRows, cols: aCols, ld: lda, stride: strideA, batch: batch)
        try checkOperand("B", buffer: b, offset: bOffset, rows: bRows, cols: bCols, ld: ldb, stride: strideB, batch: batch)
        try checkOperand("C", buffer: c, offset: cOffset, rows: m, cols: n, ld: ldc, stride: strideC, batch: batch)

        try GEMMTuning.prepare(context.device)
        try context.faults.check(.enqueue, batch == 1 ? "CLBlastSgemm" : "CLBlastSgemmStridedBatched")
        if !waitFor.isEmpty {
            // CLBlast takes no wait list; a barrier on this in-order queue orders it just the same.
            let list: [cl_event?] = waitFor.map { $0.handle }
            try clCheck(clEnqueueBarrierWithWaitList(handle, cl_uint(list.count), list, nil),
                        "clEnqueueBarrierWithWaitList")
        }
        var queue: cl_command_queue? = handle
        var event: cl_event? = nil
        let ta = transposeA ? CLBlastTransposeYes : CLBlastTransposeNo
        let tb = transposeB ? CLBlastTransposeYes : CLBlastTransposeNo
        let status: CLBlastStatusCode
        let call: String
        if batch == 1 {
            call = "CLBlastSgemm(m=\(m) n=\(n) k=\(k))"
            status = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, m, n, k, alpha, a.handle, aOffset, lda,
                                  b.handle, bOffset, ldb, beta, c.handle, cOffset, ldc, &queue, &event)
        } else {
            call = "CLBlastSgemmStridedBatched(m=\(m) n=\(n) k=\(k) batch=\(batch))"
            status = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, ta, tb, m, n, k, alpha,
                                                a.handle, aOffset, lda, strideA, b.handle, bOffset, ldb, strideB,
                                                beta, c.handle, cOffset, ldc, strideC, batch, &queue, &event)
        }
        try blastCheck(status, call)
        guard let event else { throw .clblast(call: call + " returned no event", status: CLBlastUnknownError.rawValue) }
        let done = Event(handle: event, live: context.live)
        record(call, done)
        return done
    }

    private func checkOperand(_ name: String, buffer: Buffer, offset: Int, rows: Int, cols: Int, ld: Int,
                              stride: Int, batch: Int) throws(CLNetError) {
        guard ld >= cols else {
            throw .invalidArgument("GEMM: leading dimension of \(name) is \(ld) but its rows hold \(cols) elements")
        }
        guard offset >= 0, stride >= 0 else {
            throw .invalidArgument("GEMM: \(name) has offset \(offset) and batch stride \(stride); both must be >= 0")
        }
        let needed = offset + (batch - 1) * stride + (rows - 1) * ld + cols
        guard needed <= buffer.floatCount else {
            throw .invalidArgument("""
                GEMM: \(name) (\(batch) x \(rows) x \(cols), ld \(ld), offset \(offset), stride \(stride)) needs \
                \(needed) floats but its buffer holds \(buffer.floatCount)
                """)
        }
    }
}

/// CLBlast kernel parameters that CLNet supplies where CLBlast has no tuning of its own.
///
/// CLBlast picks its kernel parameters from a database keyed by device vendor and name. PoCL
/// reports the CPU's vendor ("AuthenticAMD", "GenuineIntel") but no GPU architecture, so CLBlast
/// runs its generic defaults there, which suit GPUs. The parameters below were chosen by the
/// sweep in `clnet-bench gemm-tune` (see Benchmarks/RESULTS.md). `CLNET_CLBLAST_TUNING=0` keeps
/// CLBlast's own choice.
public enum GEMMTuning {
    /// Parameters for one CLBlast kernel.
    public struct Parameters: Sendable, Equatable {
        /// CLBlast's kernel name, e.g. "Xgemm".
        public var kernel: String
        public var values: [(String, Int)]

        public init(kernel: String, _ values: [(String, Int)]) {
            self.kernel = kernel
            self.values = values
        }

        public static func == (l: Self, r: Self) -> Bool {
            l.kernel == r.kernel && l.values.map(\.0) == r.values.map(\.0) && l.values.map(\.1) == r.values.map(\.1)
        }
    }

    private static let prepared = Mutex<Set<String>>([])

    /// The parameters CLNet applies to `device`, or none.
    public static func parameters(for device: Device) -> [Parameters] {
        device.isPoCL && device.info.type == "CPU" ? cpuParameters : []
    }

    /// Applies CLNet's parameters to `device` once per process, before its first GEMM.
    /// The overrides are applied while the lock is held, so that no other thread starts a GEMM
    /// in between: CLBlast would compile and cache its kernel with the old parameters while
    /// launching it with the new ones, which gave wrong products under concurrent first use.
    static func prepare(_ device: Device) throws(CLNetError) {
        let key = "\(device.info.index)"
        try prepared.withLock { (done) throws(CLNetError) in
            guard done.insert(key).inserted, ProcessInfo.processInfo.environment["CLNET_CLBLAST_TUNING"] != "0" else { return }
            for p in parameters(for: device) { try override(p, on: device) }
        }
    }

    /// Overrides CLBlast's parameters for one kernel on `device`; CLBlast recompiles that kernel
    /// at its next use. Benchmarks use this to compare candidates; no GEMM may run meanwhile.
    public static func apply(_ parameters: Parameters, to device: Device) throws(CLNetError) {
        try prepared.withLock { (done) throws(CLNetError) in
            done.insert("\(device.info.index)")
            try override(parameters, on: device)
        }
    }

    private static func override(_ parameters: Parameters, on device: Device) throws(CLNetError) {
        var names: [UnsafeMutablePointer<CChar>?] = parameters.values.map { name, _ in
            let bytes = Array(name.utf8CString)
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
            copy.initialize(from: bytes, count: bytes.count)
            return copy
        }
        defer { names.forEach { $0?.deallocate() } }
        var values = parameters.values.map { $0.1 }
        let status = names.withUnsafeMutableBufferPointer { namePtr in
            namePtr.withMemoryRebound(to: UnsafePointer<CChar>?.self) { constNames in
                CLBlastOverrideParameters(device.id, parameters.kernel, CLBlastPrecisionSingle, values.count,
                                          constNames.baseAddress, &values)
            }
        }
        try blastCheck(status, "CLBlastOverrideParameters(\(parameters.kernel))")
    }

    /// Chosen for CPU devices under PoCL by `clnet-bench gemm-tune` (and `--direct`) on a 2-core AVX-512 EPYC
    /// (Benchmarks/RESULTS.md): 128 x 128 tiles, 8-wide vectors and a K tile of 128 run 3-4x
    /// faster than CLBlast's GPU-shaped default. Lowering XGEMM_MIN_INDIRECT_SIZE to 128, so that
    /// small products take this kernel too, was faster still but crashed PoCL inside CLBlast's
    /// strided-batched kernel on ResNet-18 at batch 8 (an out-of-bounds access), so CLBlast's own
    /// threshold stays.
    static let cpuParameters: [Parameters] = [
        Parameters(kernel: "Xgemm", [
            ("GEMMK", 0), ("KREG", 1), ("KWG", 128), ("KWI", 2), ("MDIMA", 16), ("MDIMC", 16), ("MWG", 128),
            ("NDIMB", 16), ("NDIMC", 16), ("NWG", 128), ("SA", 1), ("SB", 1), ("STRM", 0), ("STRN", 0),
            ("VWM", 8), ("VWN", 8),
        ]),
        // Products below CLBlast's indirect threshold (every product of ResNet-20, the 16-64
        // channel convolutions) take its direct kernel. Two work items per 16x16 tile, each
        // computing 8x16 outputs with 8- and 16-wide vectors, ran ResNet-20's products 1.8-3x
        // faster than CLBlast's default on PoCL (`clnet-bench gemm-tune --direct`).
        Parameters(kernel: "XgemmDirect", [
            ("WGD", 16), ("MDIMCD", 2), ("NDIMCD", 1), ("MDIMAD", 2), ("NDIMBD", 1), ("KWID", 2), ("VWMD", 8),
            ("VWND", 16), ("PADA", 0), ("PADB", 0),
        ]),
    ]
}
