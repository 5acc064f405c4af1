import CCLBlast
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

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
