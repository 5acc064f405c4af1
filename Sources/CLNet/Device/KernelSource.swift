import CLNetKernels

/// One kernel file of `Kernels/`, one per operator family, embedded into the binary.
public enum KernelSource: String, CaseIterable, Sendable {
    case util = "Util"
    case activation = "Activation"
    case elementwise = "Elementwise"
    case norm = "Norm"
    case pool = "Pool"
    case concat = "Concat"
    case linear = "Linear"
    case loss = "Loss"
    case optimizer = "Optimizer"
    case conv = "Conv"
    case deformConv = "DeformConv"
    case dcls = "DCLS"
    case dendritic = "Dendritic"
    case spiking = "Spiking"
    case winograd = "Winograd"
    case implicitGEMM = "ImplicitGEMM"
    case gemm = "GEMM"
    case upsample = "Upsample"

    /// The file name under `Kernels/`, used in build logs so that a compiler message points at a file.
    public var fileName: String { rawValue + ".cl" }

    /// The file as written in `Kernels/`.
    public var fileText: String { Self.file(fileName) }

    /// The OpenCL C text that is compiled: `Common.cl` (shared addressing and reductions), then
    /// the file, with a `#line` directive so that compiler messages name the file's own lines.
    public var text: String {
        if self == .util { return fileText }
        return Self.file("Common.cl") + "\n#line 1 \"\(fileName)\"\n" + fileText
    }

    private static func file(_ name: String) -> String {
        // Package.swift embeds every file this enum names; the KernelSource test checks that, so a
        // missing file cannot ship, and an empty text would fail to build loudly.
        String(decoding: embeddedKernelFiles[name] ?? [], as: UTF8.self)
    }
}
