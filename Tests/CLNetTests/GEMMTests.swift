import CLNet
import Foundation
import Testing

/// Each GEMM engine (CLNet's own kernel and CLBlast), forced, against a plain Swift reference
/// accumulated in Double.
@Suite("GEMM")
struct GEMMTests {
    /// Row-major reference: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] over the described storage.
    static func reference(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                          a: [Float], aOffset: Int, lda: Int, strideA: Int,
                          b: [Float], bOffset: Int, ldb: Int, strideB: Int,
                          beta: Float, c: [Float], cOffset: Int, ldc: Int, strideC: Int, batch: Int) -> [Double] {
        var out = c.map(Double.init)
        for p in 0..<batch {
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0
                    for l in 0..<k {
                        let av = transposeA ? a[aOffset + p * strideA + l * lda + i] : a[aOffset + p * strideA + i * lda + l]
                        let bv = transposeB ? b[bOffset + p * strideB + j * ldb + l] : b[bOffset + p * strideB + l * ldb + j]
                        sum += Double(av) * Double(bv)
                    }
                    let at = cOffset + p * strideC + i * ldc + j
                    out[at] = Double(alpha) * sum + (beta == 0 ? 0 : Double(beta) * Double(c[at]))
                }
            }
        }
        return out
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var m, n, k, batch: Int
        var transposeA, transposeB: Bool
        var padded: Bool
        var beta: Float
        var testDescription: String {
            "m\(m) n\(n) k\(k) b\(batch) tA\(transposeA ? 1 : 0) tB\(transposeB ? 1 : 0)\(padded ? " padded" : "") beta\(beta)"
        }
    }

    static let cases: [Case] = {
        var list: [Case] = []
        let shapes = [(1, 1, 1), (1, 17, 3), (5, 1, 9), (17, 33, 5), (16, 16, 16), (31, 47, 63), (64, 1, 129),
                      (100, 37, 3), (3, 200, 50)]
        for (i, (m, n, k)) in shapes.enumerated() {
            list.append(Case(m: m, n: n, k: k, batch: 1, transposeA: i % 2 == 1, transposeB: i % 3 == 1,
                             padded: i % 2 == 0, beta: i % 4 == 3 ? 0.5 : 0))
        }
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            list.append(Case(m: 23, n: 19, k: 41, batch: 1, transposeA: ta, transposeB: tb, padded: true, beta: 0))
            list.append(Case(m: 9, n: 13, k: 7, batch: 4, transposeA: ta, transposeB: tb, padded: ta, beta: 0))
        }
        list.append(Case(m: 1, n: 1, k: 1, batch: 3, transposeA: false, transposeB: false, padded: false, beta: 1))
        list.append(Case(m: 32, n: 49, k: 36, batch: 32, transposeA: false, transposeB: false, padded: false, beta: 0))
        list.append(Case(m: 150, n: 131, k: 140, batch: 1, transposeA: false, transposeB: true, padded: true, beta: 0))
        list.append(Case(m: 129, n: 130, k: 131, batch: 2, transposeA: true, transposeB: false, padded: false, beta: 0.5))
        return list
    }()

    @Test(arguments: cases, GEMMEngine.allCases)
    func matchesReference(_ t: Case, engine: GEMMEngine) throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        var rng = freshGenerator("gemm \(engine) \(t.testDescription)")
        let pad = t.padded ? 3 : 0
        let (aRows, aCols) = t.transposeA ? (t.k, t.m) : (t.m, t.k)
        let (bRows, bCols) = t.transposeB ? (t.n, t.k) : (t.k, t.n)
        let lda = aCols + pad, ldb = bCols + pad, ldc = t.n + pad
        let aOffset = pad * 2, bOffset = pad, cOffset = pad * 5
        let strideA = aRows * lda + pad, strideB = bRows * ldb, strideC = t.m * ldc + pad
        let a = randomFloats(aOffset + t.batch * strideA, using: &rng)
        let b = randomFloats(bOffset + t.batch * strideB, using: &rng)
        let c = t.beta == 0 ? [Float](repeating: .nan, count: cOffset + t.batch * strideC)
                            : randomFloats(cOffset + t.batch * strideC, using: &rng)
        let (da, db, dc) = (try context.buffer(floats: a.count), try context.buffer(floats: b.count),
                            try context.buffer(floats: c.count))
        try queue.write(a, to: da)
        try queue.write(b, to: db)
        try queue.write(c, to: dc)
        let alpha: Float = 0.75
        if t.batch == 1 {
            try queue.gemm(transposeA: t.transposeA, transposeB: t.transposeB, m: t.m, n: t.n, k: t.k, alpha: alpha,
                           a: da, aOffset: aOffset, lda: lda, b: db, bOffset: bOffset, ldb: ldb,
                           beta: t.beta, c: dc, cOffset: cOffset, ldc: ldc, engine: engine)
        } else {
            try queue.gemmStridedBatched(transposeA: t.transposeA, transposeB: t.transposeB, m: t.m, n: t.n, k: t.k,
                                         alpha: alpha, a: da, aOffset: aOffset, lda: lda, strideA: strideA,
                                         b: db, bOffset: bOffset, ldb: ldb, strideB: strideB,
                                         beta: t.beta, c: dc, cOffset: cOffset, ldc: ldc, strideC: strideC,
                                         batch: t.batch, engine: engine)
        }
        let got: [Float] = try queue.read(dc)
        let want = Self.reference(transposeA: t.transposeA, transposeB: t.transposeB, m: t.m, n: t.n, k: t.k,
                                  alpha: alpha, a: a, aOffset: aOffset, lda: lda, strideA: strideA,
                                  b: b, bOffset: bOffset, ldb: ldb, strideB: strideB, beta: t.beta,
                                  c: c, cOffset: cOffset, ldc: ldc, strideC: strideC, batch: t.batch)
        // Compare only the elements GEMM owns; everything else must be untouched (NaN stays NaN).
        var owned: [Int] = []
        for p in 0..<t.batch { for i in 0..<t.m { for j in 0..<t.n { owned.append(cOffset + p * strideC + i * ldc + j) } } }
        let ownedSet = Set(owned)
        let error = relativeError(owned.map { got[$0] }, owned.map { want[$0] })
        #expect(error <= 1e-5, "relative error \(error)")
        for i in got.indices where !ownedSet.contains(i) {
            #expect(got[i].isNaN ? c[i].isNaN : got[i] == c[i], "GEMM wrote outside C at \(i)")
        }
    }

    /// Products of at least 896^3 multiply-adds take CLBlast's padded (indirect) kernel, the one
    /// CLNet tunes on PoCL, and CLNet's kernel through many panels and packing blocks. The
    /// reference is too slow for every element here, so a random sample is compared, and every
    /// element must have been written.
    @Test(arguments: [(1, false, true, GEMMEngine.clblast), (2, true, false, .clblast), (1, true, true, .clnet),
                      (2, false, false, .clnet)])
    func largeProducts(batch: Int, transposeA: Bool, transposeB: Bool, engine: GEMMEngine) throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        var rng = freshGenerator("large gemm \(engine) batch \(batch)")
        let (m, n, k) = (1001, 905, 800)
        let a = randomFloats(batch * m * k, using: &rng), b = randomFloats(batch * k * n, using: &rng)
        let (da, db, dc) = (try context.buffer(floats: a.count), try context.buffer(floats: b.count),
                            try context.buffer(floats: batch * m * n))
        try queue.write(a, to: da)
        try queue.write(b, to: db)
        try queue.fill(dc, with: .nan)
        let lda = transposeA ? m : k, ldb = transposeB ? k : n
        try queue.gemmStridedBatched(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, a: da, lda: lda,
                                     strideA: m * k, b: db, ldb: ldb, strideB: k * n, c: dc, strideC: m * n, batch: batch,
                                     engine: engine)
        let c: [Float] = try queue.read(dc)
        let written = c.allSatisfy { $0.isFinite }
        #expect(written, "every element written")
        var got: [Float] = [], want: [Double] = []
        for _ in 0..<300 {
            let p = Int.random(in: 0..<batch, using: &rng), i = Int.random(in: 0..<m, using: &rng), j = Int.random(in: 0..<n, using: &rng)
            var sum = 0.0
            for l in 0..<k {
                let av = transposeA ? a[p * m * k + l * m + i] : a[p * m * k + i * k + l]
                let bv = transposeB ? b[p * k * n + j * k + l] : b[p * k * n + l * n + j]
                sum += Double(av) * Double(bv)
            }
            got.append(c[p * m * n + i * n + j])
            want.append(sum)
        }
        let error = relativeError(got, want)
        #expect(error <= 1e-5, "relative error \(error) on sampled elements")
    }

    @Test func invalidArgumentsThrowBeforeCLBlast() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let a = try context.buffer(floats: 12), b = try context.buffer(floats: 12), c = try context.buffer(floats: 9)
        let zero = #expect(throws: CLNetError.self) { try queue.gemm(m: 0, n: 3, k: 4, a: a, b: b, c: c) }
        #expect("\(zero!)".contains("m=0"))
        let ld = #expect(throws: CLNetError.self) { try queue.gemm(m: 3, n: 3, k: 4, a: a, lda: 2, b: b, c: c) }
        #expect("\(ld!)".contains("leading dimension of A"))
        let small = #expect(throws: CLNetError.self) { try queue.gemm(m: 3, n: 4, k: 3, a: a, b: b, c: c) }
        #expect("\(small!)".contains("C (1 x 3 x 4"))
        #expect("\(small!)".contains("holds 9"))
        #expect(throws: CLNetError.self) {
            try queue.gemmStridedBatched(m: 3, n: 3, k: 4, a: a, strideA: 12, b: b, strideB: 12, c: c, strideC: 9,
                                         batch: 2)
        }
        #expect(throws: CLNetError.self) {
            try queue.gemmStridedBatched(m: 3, n: 3, k: 4, a: a, strideA: 0, b: b, strideB: 0, c: c, strideC: 0,
                                         batch: 0)
        }
    }

    @Test func waitsForEventsFromAnotherQueue() throws {
        let context = try Shared.context()
        let (q1, q2) = (try context.makeQueue(), try context.makeQueue())
        let a = try context.buffer(floats: 64), b = try context.buffer(floats: 64), c = try context.buffer(floats: 64)
        let fillA = try q1.fill(a, with: 1)
        let fillB = try q1.fill(b, with: 2)
        try q2.gemm(m: 8, n: 8, k: 8, a: a, b: b, c: c, waitFor: [fillA, fillB]).wait()
        #expect(try q2.read(c) == [Float](repeating: 16, count: 64))
    }
}

/// The example README.md shows, run as written.
@Test func readmeExample() throws {
    let context = try Context()
    let queue = try context.makeQueue()
    let a = try context.buffer(floats: 64 * 32), b = try context.buffer(floats: 32 * 16)
    let c = try context.buffer(floats: 64 * 16)
    try queue.write([Float](repeating: 1, count: 64 * 32), to: a)
    try queue.write([Float](repeating: 2, count: 32 * 16), to: b)
    try queue.gemm(m: 64, n: 16, k: 32, a: a, b: b, c: c)
    let result: [Float] = try queue.read(c)
    #expect(result == [Float](repeating: 64, count: 64 * 16))
}
