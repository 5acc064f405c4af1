import CCLBlast
import COpenCL
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// Which implementation computes a matrix product.
public enum GEMMEngine: String, Sendable, CaseIterable {
    /// CLNet's own packed, register-blocked kernel (Kernels/GEMM.cl), written for CPUs.
    case clnet
    /// CLBlast, with its vendor tuning on GPUs (and CLNet's parameters under PoCL).
    case clblast

    /// The engine a device uses unless told: `CLNET_GEMM` (`clnet` or `clblast`) where set;
    /// else CLNet's own on CPUs, where it measured 2.0-2.7x CLBlast's rate under PoCL
    /// (Benchmarks/RESULTS.md), and CLBlast on GPUs, whose vendor tuning CLNet's CPU kernel does
    /// not match.
    public static func preferred(for device: Device) -> GEMMEngine {
        setting.flatMap(GEMMEngine.init(rawValue:)) ?? (device.info.type == "CPU" ? .clnet : .clblast)
    }

    /// Refuses a `CLNET_GEMM` that names no engine, rather than ignore what the user asked for.
    static func checkSetting() throws(CLNetError) {
        if let setting, GEMMEngine(rawValue: setting) == nil {
            throw .invalidArgument("CLNET_GEMM is '\(setting)'; set it to clnet or clblast, or unset it")
        }
    }

    // Read once: every product asks.
    private static let setting = ProcessInfo.processInfo.environment["CLNET_GEMM"]
}

/// Single-precision matrix products on row-major matrices, by CLNet's own kernel or CLBlast
/// (`GEMMEngine`).
///
/// `C = alpha * op(A) * op(B) + beta * C` with `op(A)` of shape m x k and `op(B)` of shape k x n.
/// Offsets and leading dimensions are in elements; a leading dimension left nil is the dense one.
/// With `beta` 0, C is only written, never read.
extension CommandQueue {
    /// One matrix product. Runs after `waitFor` and everything enqueued earlier on this queue.
    @discardableResult
    public func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: Buffer, aOffset: Int = 0, lda: Int? = nil,
                     b: Buffer, bOffset: Int = 0, ldb: Int? = nil,
                     beta: Float = 0, c: Buffer, cOffset: Int = 0, ldc: Int? = nil, storage: GEMMStorage = .float,
                     engine: GEMMEngine? = nil, waitFor: [Event] = []) throws(CLNetError) -> Event {
        try gemmStridedBatched(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                               a: a, aOffset: aOffset, lda: lda, strideA: 0, b: b, bOffset: bOffset, ldb: ldb,
                               strideB: 0, beta: beta, c: c, cOffset: cOffset, ldc: ldc, strideC: 0,
                               batch: 1, storage: storage, engine: engine, waitFor: waitFor)
    }

    /// `batch` matrix products whose operands sit `strideA`, `strideB` and `strideC` elements apart
    /// (grouped convolution runs one per group). A batch of one is a plain GEMM.
    @discardableResult
    public func gemmStridedBatched(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                                   alpha: Float = 1, a: Buffer, aOffset: Int = 0, lda: Int? = nil, strideA: Int,
                                   b: Buffer, bOffset: Int = 0, ldb: Int? = nil, strideB: Int,
                                   beta: Float = 0, c: Buffer, cOffset: Int = 0, ldc: Int? = nil, strideC: Int,
                                   batch: Int, storage: GEMMStorage = .float, engine: GEMMEngine? = nil,
                                   waitFor: [Event] = []) throws(CLNetError) -> Event {
        try gemmStridedBatched(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a,
                               aOffset: aOffset, lda: lda, strideA: strideA, b: b, bOffset: bOffset, ldb: ldb,
                               strideB: strideB, beta: beta, c: c, cOffset: cOffset, ldc: ldc, strideC: strideC,
                               batch: batch, storage: storage, engine: engine, rowStatistics: nil, waitFor: waitFor)
    }

    /// The same, also writing statistics of C's rows where `rowStatistics` says (CLNet's GEMM only).
    func gemmStridedBatched(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: Buffer, aOffset: Int = 0, lda: Int? = nil, strideA: Int,
                            b: Buffer, bOffset: Int = 0, ldb: Int? = nil, strideB: Int,
                            beta: Float = 0, c: Buffer, cOffset: Int = 0, ldc: Int? = nil, strideC: Int,
                            batch: Int, storage: GEMMStorage = .float, engine: GEMMEngine? = nil,
                            rowStatistics: RowStatistics?, waitFor: [Event] = []) throws(CLNetError) -> Event {
        guard m > 0, n > 0, k > 0, batch > 0 else {
            throw .invalidArgument("GEMM needs positive sizes; got m=\(m) n=\(n) k=\(k) batch=\(batch)")
        }
        // Row-major: op(A) is m x k, stored k x m when transposed.
        let (aRows, aCols) = transposeA ? (k, m) : (m, k)
        let (bRows, bCols) = transposeB ? (n, k) : (k, n)
        let lda = lda ?? aCols, ldb = ldb ?? bCols, ldc = ldc ?? n
        try checkOperand("A", buffer: a, offset: aOffset, rows: aRows, cols: aCols, ld: lda, stride: strideA, batch: batch,
                         storage: storage.a)
        try checkOperand("B", buffer: b, offset: bOffset, rows: bRows, cols: bCols, ld: ldb, stride: strideB, batch: batch,
                         storage: storage.b)
        try checkOperand("C", buffer: c, offset: cOffset, rows: m, cols: n, ld: ldc, stride: strideC, batch: batch,
                         storage: storage.c)
        try GEMMEngine.checkSetting()
        // CLBlast's products take float32 (or, with cl_khr_fp16, half arithmetic): 16-bit operands
        // go to CLNet's own, whose packing reads them.
        if (engine ?? GEMMEngine.preferred(for: context.device)) == .clnet || storage != .float {
            return try panelGEMM(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                                 a: a, aOffset: aOffset, lda: lda, strideA: strideA, b: b, bOffset: bOffset, ldb: ldb,
                                 strideB: strideB, beta: beta, c: c, cOffset: cOffset, ldc: ldc, strideC: strideC,
                                 batch: batch, storage: storage, rowStatistics: rowStatistics, waitFor: waitFor)
        }
        guard rowStatistics == nil else {
            throw .invalidArgument("GEMM: row statistics come only from CLNet's GEMM (GEMMEngine.clnet), not CLBlast")
        }

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

    /// CLNet's own product (Kernels/GEMM.cl): both operands packed into panels, then one work
    /// item per MR x NR block of C. The panels live in a buffer of this queue's of at most
    /// `GEMMPanels.packingFloats` (more only when A's panels alone need more): a product whose B
    /// would not fit runs as several over slices of B's and C's columns, each packing only its
    /// slice, so that the device memory an executor needs is known before it runs.
    private func panelGEMM(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                           a: Buffer, aOffset: Int, lda: Int, strideA: Int, b: Buffer, bOffset: Int, ldb: Int, strideB: Int,
                           beta: Float, c: Buffer, cOffset: Int, ldc: Int, strideC: Int, batch: Int,
                           storage: GEMMStorage, rowStatistics: RowStatistics?, waitFor: [Event]) throws(CLNetError) -> Event {
        let shape = GEMMPanels(device: context.device)
        let panelsM = (m + shape.mr - 1) / shape.mr
        // An operand every batch entry shares (stride 0) is packed once.
        let batchA = strideA == 0 ? 1 : batch, batchB = strideB == 0 ? 1 : batch
        let packedA = batchA * panelsM * shape.mr * k
        // Columns per slice: whole panels, as many as the packing buffer holds beside A's.
        let room = max(GEMMPanels.packingFloats - packedA, 0) / (k * batchB) / shape.nr * shape.nr
        let slice = min(max(room, shape.nr), (n + shape.nr - 1) / shape.nr * shape.nr)
        let needed = packedA + batchB * slice * k
        // The kernels take offsets and sizes in 32 bits; every operand lies inside its buffer.
        for (name, floats) in [("A", a.byteCount / storage.a.bytes), ("B", b.byteCount / storage.b.bytes),
                              ("C", c.byteCount / storage.c.bytes), ("the packed panels", needed)]
        where floats > Int(UInt32.max) {
            throw .invalidArgument("GEMM: \(name) spans \(floats) floats; CLNet's GEMM addresses at most 2^32 (use CLNET_GEMM=clblast)")
        }
        let packing = try gemmPacking.withLock { (held) throws(CLNetError) -> Buffer in
            if let buffer = held, buffer.floatCount >= needed { return buffer }
            let grown = try context.buffer(floats: max(needed, min(GEMMPanels.packingFloats, (held?.floatCount ?? 0) * 2)))
            held = grown
            return grown
        }
        var defines = shape.defines(transposeA: transposeA, transposeB: transposeB).merging(try storage.defines()) { a, _ in a }
        if rowStatistics != nil { defines["ROW_STATS"] = "1" }
        let program = try context.program(.gemm, defines: defines)
        let blocks = (k + shape.kb - 1) / shape.kb
        // Work-groups of several work items: a CPU pays for every group, and with small k (the
        // 16-64-channel products of CIFAR ResNets) groups of one spent more time starting than
        // computing.
        func groups(_ x: Int, _ y: Int) -> [Int] {
            let gx = largestDivisor(of: x, atMost: GEMMPanels.groupSize)
            return [gx, largestDivisor(of: y, atMost: GEMMPanels.groupSize / gx), 1]
        }
        let packA = try program.kernel("gemm_pack_a"), packB = try program.kernel("gemm_pack_b")
        let product = try program.kernel("gemm_panels")
        try enqueue(packA, [.buffer(a), .uint(UInt32(aOffset)), .uint(UInt32(lda)), .uint(UInt32(strideA)), .uint(UInt32(m)),
                            .uint(UInt32(k)), .buffer(packing)],
                    global: [panelsM, blocks, batchA], local: groups(panelsM, blocks), waitFor: waitFor)
        var done: Event? = nil
        for first in stride(from: 0, to: n, by: slice) {
            let columns = min(slice, n - first)
            // Column `first` of op(B) starts `first` elements in, or `first` rows in when B is transposed.
            let bStart = bOffset + (transposeB ? first * ldb : first)
            try enqueue(packB, [.buffer(b), .uint(UInt32(bStart)), .uint(UInt32(ldb)), .uint(UInt32(strideB)),
                                .uint(UInt32(columns)), .uint(UInt32(k)), .buffer(packing), .uint(UInt32(packedA))],
                        global: [(columns + shape.nr - 1) / shape.nr, blocks, batchB],
                        local: groups((columns + shape.nr - 1) / shape.nr, blocks))
            let panelsN = (columns + shape.nr - 1) / shape.nr
            var statistics: [KernelArgument] = []
            if let r = rowStatistics {
                statistics = [.buffer(r.buffer)] + (try KernelArgument.counts([r.offset, r.firstPart,
                                                                               (n + shape.nr - 1) / shape.nr, first / shape.nr]))
            }
            done = try enqueue(product, [.buffer(packing), .uint(0), .uint(UInt32(strideA == 0 ? 0 : panelsM * shape.mr * k)),
                                         .buffer(packing), .uint(UInt32(packedA)),
                                         .uint(UInt32(strideB == 0 ? 0 : panelsN * shape.nr * k)), .buffer(c),
                                         .uint(UInt32(cOffset + first)), .uint(UInt32(ldc)), .uint(UInt32(strideC)),
                                         .uint(UInt32(m)), .uint(UInt32(columns)), .uint(UInt32(k)), .float(alpha),
                                         .float(beta)] + statistics,
                               global: [panelsM, (columns + shape.nr - 1) / shape.nr, batch],
                               local: groups(panelsM, (columns + shape.nr - 1) / shape.nr))
        }
        return done!
    }

    /// `batch` products of operands already in CLNet's panel layout (GEMM.cl: A in panels of
    /// `GEMMPanels.mr` rows, B in panels of `nr` columns, both k-major, batch entries `strideA`
    /// and `strideB` floats apart), into row-major C: what Winograd convolutions call after
    /// writing their transforms as panels, so that nothing is packed twice.
    /// With `aAsBPanels`, A is laid out as B's panels would hold its transpose (GEMM.cl).
    func panelProduct(m: Int, n: Int, k: Int, a: Buffer, aOffset: Int, strideA: Int, aAsBPanels: Bool = false,
                      b: Buffer, bOffset: Int, strideB: Int, beta: Float, c: Buffer, cOffset: Int, ldc: Int,
                      strideC: Int, batch: Int) throws(CLNetError) -> Event {
        let shape = GEMMPanels(device: context.device)
        let panelsM = (m + shape.mr - 1) / shape.mr, panelsN = (n + shape.nr - 1) / shape.nr
        let aSpan = aAsBPanels ? (k + shape.nr - 1) / shape.nr * shape.nr * m : panelsM * shape.mr * k
        for (name, buffer, end) in [("A", a, aOffset + (batch - 1) * strideA + aSpan),
                                    ("B", b, bOffset + (batch - 1) * strideB + panelsN * shape.nr * k),
                                    ("C", c, cOffset + (batch - 1) * strideC + (m - 1) * ldc + n)]
        where end > buffer.floatCount || end > Int(UInt32.max) {
            throw .invalidArgument("GEMM panels: \(name) needs \(end) floats but its buffer holds \(buffer.floatCount)")
        }
        var defines = shape.defines(transposeA: false, transposeB: false)
        if aAsBPanels { defines["A_AS_B_PANELS"] = "1" }
        let program = try context.program(.gemm, defines: defines)
        let gx = largestDivisor(of: panelsM, atMost: GEMMPanels.groupSize)
        return try enqueue(try program.kernel("gemm_panels"),
                           [.buffer(a), .uint(UInt32(aOffset)), .uint(UInt32(strideA)), .buffer(b), .uint(UInt32(bOffset)),
                            .uint(UInt32(strideB)), .buffer(c), .uint(UInt32(cOffset)), .uint(UInt32(ldc)),
                            .uint(UInt32(strideC)), .uint(UInt32(m)), .uint(UInt32(n)), .uint(UInt32(k)), .float(1),
                            .float(beta)],
                           global: [panelsM, panelsN, batch],
                           local: [gx, largestDivisor(of: panelsN, atMost: GEMMPanels.groupSize / gx), 1])
    }

    private func checkOperand(_ name: String, buffer: Buffer, offset: Int, rows: Int, cols: Int, ld: Int,
                              stride: Int, batch: Int, storage: Precision) throws(CLNetError) {
        guard ld >= cols else {
            throw .invalidArgument("GEMM: leading dimension of \(name) is \(ld) but its rows hold \(cols) elements")
        }
        guard offset >= 0, stride >= 0 else {
            throw .invalidArgument("GEMM: \(name) has offset \(offset) and batch stride \(stride); both must be >= 0")
        }
        let needed = offset + (batch - 1) * stride + (rows - 1) * ld + cols
        guard needed <= buffer.byteCount / storage.bytes else {
            throw .invalidArgument("""
                GEMM: \(name) (\(batch) x \(rows) x \(cols), ld \(ld), offset \(offset), stride \(stride)) needs \
                \(needed) \(storage) elements but its buffer holds \(buffer.byteCount / storage.bytes)
                """)
        }
    }
}

/// Where CLNet's GEMM also writes, for each row of C and each block of NR columns of each batch
/// entry, the count, mean and M2 of the values it stored (GEMM.cl, ROW_STATS), when C's rows are
/// a convolution's output channels: a `WrittenStatistics`' partials, part by part, row r of part
/// p at `offset + 3 * (p * m + r)`. Batch entry b's blocks start at part
/// `firstPart + b * ceil(n / NR)`.
struct RowStatistics {
    let buffer: Buffer
    let offset: Int
    var firstPart = 0
}

/// The register block of CLNet's GEMM on a device: MR rows by NR columns of C per work item, in
/// vectors of VW floats, the device's preferred width (16 with AVX-512, 8 with AVX2). The
/// accumulators, MR rows of two vectors, fill the vector registers but for B's two vectors and
/// A's broadcast: 16 of AVX-512's 32 (8 rows ran 1.2-1.4x faster than 6, and 12 spilled), 12 of
/// AVX2's 16 (Benchmarks/RESULTS.md).
struct GEMMPanels: Sendable, Equatable {
    let mr: Int, nr: Int, vw: Int
    /// The kk each packing work item copies.
    let kb = 64
    /// The most floats of packed operands a queue keeps (16 MiB): larger products run in column
    /// slices. An executor counts this much device memory per queue on devices that use CLNet's GEMM.
    static let packingFloats = 1 << 22
    /// The most work items per work-group.
    static let groupSize = 16

    /// The largest block of any device (AVX-512's): what a device-independent memory plan must
    /// leave room for when it sizes buffers in this layout.
    static let largest = (mr: 8, nr: 32)
    /// Every MR a device may get (`init`): a buffer of whole row blocks sized for one device may
    /// be too small for another, since 6 does not divide 8.
    static let rowBlocks = [6, 8]

    init(device: Device) {
        let preferred = device.info.preferredFloatVectorWidth
        vw = preferred >= 16 ? 16 : preferred >= 8 ? 8 : 4
        mr = vw >= 16 ? 8 : 6
        nr = 2 * vw
    }

    func defines(transposeA: Bool, transposeB: Bool) -> [String: String] {
        ["MR": "\(mr)", "NR": "\(nr)", "VW": "\(vw)", "KB": "\(kb)", "TRANS_A": transposeA ? "1" : "0", "TRANS_B": transposeB ? "1" : "0"]
    }
}

/// The formats a product's operands are stored in: a convolution's input, output and weights are
/// stored as its activations are (`Precision`), its workspaces and weight gradients as float.
/// The 16-bit operands of one product share one format.
public struct GEMMStorage: Equatable, Sendable {
    public var a: Precision, b: Precision, c: Precision
    public init(a: Precision = .fp32, b: Precision = .fp32, c: Precision = .fp32) { (self.a, self.b, self.c) = (a, b, c) }
    public static let float = GEMMStorage()

    /// Kernels/GEMM.cl's A_STORED, B_STORED and C_STORED, and the storage macro they refer to.
    func defines() throws(CLNetError) -> [String: String] {
        var defines: [String: String] = [:], format = Precision.fp32
        for (name, p) in [("A_STORED", a), ("B_STORED", b), ("C_STORED", c)] where p != .fp32 {
            guard format == .fp32 || format == p else {
                throw .invalidArgument("GEMM: operands in both \(format) and \(p); one product takes one 16-bit format")
            }
            format = p
            defines[name] = "1"
        }
        if let macro = format.define { defines[macro] = "1" }
        return defines
    }
}
