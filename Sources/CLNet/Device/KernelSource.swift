import CLNetKernels

/// One kernel file of `Kernels/`, one per operator family, embedded into the binary.
public enum KernelSource: String, CaseIterable, Sendable {
    case util = "Util"

    /// The file name under `Kernels/`, used in build logs so that a compiler message points at a file.
    public var fileName: String { rawValue + ".cl" }

    /// The file's OpenCL C text.
    public var text: String {
        // Package.swift embeds every file this enum names; a missing one is a packaging bug that
        // the KernelSource test catches, so an empty text (which fails to build loudly) suffices.
        String(decoding: embeddedKernelFiles[fileName] ?? [], as: UTF8.self)
    }
}
