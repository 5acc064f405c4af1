import ArgumentParser
import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Sweeps CLBlast Xgemm parameter sets on the device and prints GFLOP/s for each, so that the
/// set `GEMMTuning` supplies can be chosen and justified.
struct GEMMTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm-tune",
        abstract: "Compare CLBlast Xgemm parameter sets (CLBlast's default first) at GEMM sizes.")

    @OptionGroup var common: Common

    @Option(help: "Square sizes, comma-separated (sizes CLBlast serves with its indirect Xgemm kernel).")
    var sizes = "1024,2048"

    @Option(help: "Override CLBlast's XGEMM_MIN_INDIRECT_SIZE: GEMMs with m*n*k below its cube use the direct kernel.")
    var minIndirect: Int?

    @Option(help: "Run only these candidates (comma-separated names); a crash in one then spares the rest.")
    var only: String?

    @Flag(help: "Sweep CLBlast's XgemmDirect kernel instead, on the strided-batched products of a ResNet-20 step (batch 128).")
    var direct = false

    func run() throws {
        let context = try common.context()
        if direct { return try runDirect(context) }
        let shapes = sizes.split(separator: ",").compactMap { Int($0) }.map(GEMMShape.square) + [.conv3x3]
        var rows: [[String]] = []
        if let minIndirect {
            try GEMMTuning.apply(GEMMTuning.Parameters(kernel: "GemmRoutine", [("XGEMM_MIN_INDIRECT_SIZE", minIndirect)]),
                                 to: context.device)
        }
        let chosen = only.map { Set($0.split(separator: ",").map(String.init)) }
        for candidate in Self.candidates where chosen?.contains(candidate.name) ?? true {
            try GEMMTuning.apply(GEMMTuning.Parameters(kernel: "Xgemm", candidate.values), to: context.device)
            var row = [candidate.name]
            for shape in shapes {
                // CLBlast's, whatever engine the device prefers: these are its parameters.
                let r = try timeGEMM(context, shape, engine: .clblast, warmup: common.warmup, iters: common.iters)
                row.append(format(r.gflops))
            }
            print(row.joined(separator: "  "))
            flushOutput()
            rows.append(row)
        }
        print("")
        printTable(header: ["Xgemm parameters"] + shapes.map { "\($0.label) GFLOP/s" }, rows: rows)
    }

    /// The products of ResNet-20's first and last stage at batch 128 (28x28 input), as its
    /// convolutions call them: forward (weights shared across samples), input gradient (weights
    /// transposed) and the weight gradient's split-K product.
    struct BatchedShape {
        var label: String
        var transA = false, transB = false
        var m: Int, n: Int, k: Int, batch: Int
        var sharedA = false
        var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(batch) }
    }

    static let resnet20Shapes = [
        BatchedShape(label: "fwd 16x784x144 b128", m: 16, n: 784, k: 144, batch: 128, sharedA: true),
        BatchedShape(label: "dx 144x784x16 b128", transA: true, m: 144, n: 784, k: 16, batch: 128, sharedA: true),
        BatchedShape(label: "dw 16x144x24500 b4", transB: true, m: 16, n: 144, k: 24500, batch: 4),
        BatchedShape(label: "fwd 64x49x576 b128", m: 64, n: 49, k: 576, batch: 128, sharedA: true),
    ]

    func runDirect(_ context: Context) throws {
        let queue = try context.makeQueue()
        var rows: [[String]] = []
        let chosen = only.map { Set($0.split(separator: ",").map(String.init)) }
        for candidate in [("current", [])] + Self.directCandidates where chosen?.contains(candidate.0) ?? true {
            if !candidate.1.isEmpty {
                try GEMMTuning.apply(GEMMTuning.Parameters(kernel: "XgemmDirect", candidate.1), to: context.device)
            }
            var row = [candidate.0]
            for s in Self.resnet20Shapes {
                let aCount = s.m * s.k * (s.sharedA ? 1 : s.batch), bCount = s.k * s.n * s.batch
                let a = try context.buffer(floats: aCount), b = try context.buffer(floats: bCount)
                let c = try context.buffer(floats: s.m * s.n * s.batch)
                try queue.write((0..<aCount).map { _ in Float.random(in: -1...1) }, to: a)
                try queue.write((0..<bCount).map { _ in Float.random(in: -1...1) }, to: b)
                let time = try measure(queue, warmup: common.warmup, iters: common.iters) {
                    try queue.gemmStridedBatched(transposeA: s.transA, transposeB: s.transB, m: s.m, n: s.n, k: s.k,
                                                 a: a, lda: s.transA ? s.m : s.k, strideA: s.sharedA ? 0 : s.m * s.k,
                                                 b: b, ldb: s.transB ? s.k : s.n, strideB: s.k * s.n,
                                                 c: c, ldc: s.n, strideC: s.m * s.n, batch: s.batch, engine: .clblast)
                }
                row.append(format(s.flops / time.median * 1e-9))
            }
            print(row.joined(separator: "  "))
            flushOutput()
            rows.append(row)
        }
        print("")
        printTable(header: ["XgemmDirect parameters"] + Self.resnet20Shapes.map { "\($0.label) GFLOP/s" }, rows: rows)
    }

    /// XgemmDirect candidates for CPUs: larger tiles and wider vectors than CLBlast's GPU defaults.
    static let directCandidates: [(String, [(String, Int)])] = [
        ("d16-t4-v4", set("WGD=16 MDIMCD=4 NDIMCD=4 MDIMAD=4 NDIMBD=4 KWID=2 VWMD=4 VWND=4 PADA=1 PADB=1")),
        ("d16-t4x2-v4x8", set("WGD=16 MDIMCD=4 NDIMCD=2 MDIMAD=4 NDIMBD=2 KWID=2 VWMD=4 VWND=8 PADA=1 PADB=1")),
        ("d16-t2x1-v8x16", set("WGD=16 MDIMCD=2 NDIMCD=1 MDIMAD=2 NDIMBD=1 KWID=2 VWMD=8 VWND=16 PADA=1 PADB=1")),
        ("d16-t2x1-v8x16-k4", set("WGD=16 MDIMCD=2 NDIMCD=1 MDIMAD=2 NDIMBD=1 KWID=4 VWMD=8 VWND=16 PADA=1 PADB=1")),
        ("d16-t2x1-v8x16-nopad", set("WGD=16 MDIMCD=2 NDIMCD=1 MDIMAD=2 NDIMBD=1 KWID=2 VWMD=8 VWND=16 PADA=0 PADB=0")),
        ("d16-t1x1-v16x16", set("WGD=16 MDIMCD=1 NDIMCD=1 MDIMAD=1 NDIMBD=1 KWID=2 VWMD=16 VWND=16 PADA=1 PADB=1")),
        ("d16-t1x2-v16x8", set("WGD=16 MDIMCD=1 NDIMCD=2 MDIMAD=1 NDIMBD=2 KWID=2 VWMD=16 VWND=8 PADA=1 PADB=1")),
        ("d32-t2x2-v16x16", set("WGD=32 MDIMCD=2 NDIMCD=2 MDIMAD=2 NDIMBD=2 KWID=2 VWMD=16 VWND=16 PADA=1 PADB=1")),
        ("d32-t4x2-v8x16", set("WGD=32 MDIMCD=4 NDIMCD=2 MDIMAD=4 NDIMBD=2 KWID=2 VWMD=8 VWND=16 PADA=1 PADB=1")),
    ]

    static func set(_ text: String) -> [(String, Int)] {
        text.split(separator: " ").map { pair in
            let kv = pair.split(separator: "=")
            return (String(kv[0]), Int(kv[1])!)
        }
    }

    /// CLBlast 1.5.3's own entries (its generic default, its Intel-CPU default and tuned Intel CPUs)
    /// and a few larger tiles for wide-vector CPUs.
    static let candidates: [(name: String, values: [(String, Int)])] = [
        ("clblast-default", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=32 NDIMB=16 NDIMC=16 NWG=32 SA=1 SB=1 STRM=0 STRN=0 VWM=4 VWN=2")),
        ("intel-cpu-default", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=64 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=4 VWN=4")),
        ("i7-5930K", set("GEMMK=0 KREG=1 KWG=32 KWI=8 MDIMA=16 MDIMC=16 MWG=64 NDIMB=32 NDIMC=32 NWG=64 SA=0 SB=1 STRM=1 STRN=0 VWM=1 VWN=2")),
        ("i7-3770", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=32 MDIMC=8 MWG=128 NDIMB=8 NDIMC=8 NWG=128 SA=1 SB=1 STRM=1 STRN=1 VWM=2 VWN=8")),
        ("i7-4790K", set("GEMMK=0 KREG=1 KWG=16 KWI=2 MDIMA=8 MDIMC=8 MWG=128 NDIMB=8 NDIMC=8 NWG=128 SA=1 SB=1 STRM=1 STRN=0 VWM=1 VWN=8")),
        ("xeon-e5-2630v3", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=8 MWG=32 NDIMB=8 NDIMC=32 NWG=128 SA=1 SB=1 STRM=1 STRN=1 VWM=1 VWN=4")),
        ("i9-9980HK", set("GEMMK=1 KREG=2 KWG=1 KWI=1 MDIMA=16 MDIMC=16 MWG=64 NDIMB=4 NDIMC=4 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=1 VWN=1")),
        ("i5-4590S", set("GEMMK=1 KREG=16 KWG=1 KWI=1 MDIMA=2 MDIMC=2 MWG=64 NDIMB=2 NDIMC=2 NWG=128 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=2")),
        ("wide-128x128-v8", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-k64", set("GEMMK=0 KREG=1 KWG=64 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-k128", set("GEMMK=0 KREG=1 KWG=128 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-k256", set("GEMMK=0 KREG=1 KWG=256 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-k64-kwi8", set("GEMMK=0 KREG=1 KWG=64 KWI=8 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-k64-nolocal", set("GEMMK=0 KREG=1 KWG=64 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v8-d8", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=128 NDIMB=8 NDIMC=8 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v16-d8", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=128 NDIMB=8 NDIMC=8 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=16 VWN=16")),
        ("wide-256x128-v8", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=256 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-128x128-v4", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=1 SB=1 STRM=0 STRN=0 VWM=4 VWN=4")),
        ("wide-128x128-v8-nolocal", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=16 MDIMC=16 MWG=128 NDIMB=16 NDIMC=16 NWG=128 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=8")),
        ("wide-64x128-v8-nolocal", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=16 NDIMC=16 NWG=128 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=8")),
        // The best of CLBlast's own tuner (`clblast_tuner_xgemm -precision 32 -m 1024 -n 1024 -k 1024 -fraction 0.02
        // -runs 1`, Benchmarks/RESULTS.md): its fixed set, and the part of its random search that ran.
        ("clblast-tuner-fixed", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=8 NDIMC=8 NWG=64 SA=0 SB=0 STRM=0 STRN=0 VWM=4 VWN=4")),
        ("clblast-tuner-random", set("GEMMK=0 KREG=1 KWG=32 KWI=2 MDIMA=8 MDIMC=8 MWG=64 NDIMB=32 NDIMC=8 NWG=128 SA=0 SB=0 STRM=0 STRN=0 VWM=8 VWN=4")),
    ]
}
