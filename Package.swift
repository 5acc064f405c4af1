// swift-tools-version: 6.0
import PackageDescription

// Every kernel file in Kernels/ is embedded into the binary, so that a static build runs with no
// file beside it. A new kernel file goes here, into `embeddedKernelFiles` (Kernels/KernelSources.swift)
// and into `KernelSource` (Sources/CLNet/Device/KernelSource.swift); ProgramCacheTests checks all three.
let kernelFiles = [
    "Common.cl", "Util.cl", "Activation.cl", "Elementwise.cl", "Norm.cl", "Pool.cl", "Concat.cl", "Linear.cl",
    "Loss.cl", "Optimizer.cl", "Conv.cl", "DeformConv.cl", "DCLS.cl", "Dendritic.cl", "Spiking.cl", "Winograd.cl", "ImplicitGEMM.cl",
    "GEMM.cl", "Upsample.cl",
]

let package = Package(
    name: "CLNet",
    products: [
        .library(name: "CLNet", targets: ["CLNet"]),
        .executable(name: "clnet", targets: ["clnet"]),
        .executable(name: "clnet-bench", targets: ["clnet-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenCL",
            pkgConfig: "OpenCL",
            providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers"])]
        ),
        .systemLibrary(
            name: "CCLBlast",
            pkgConfig: "clblast",
            providers: [.apt(["libclblast-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CTurboJPEG",
            pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]
        ),
        .systemLibrary(
            name: "CPNG",
            pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]
        ),
        .target(
            name: "CLNetKernels",
            path: "Kernels",
            resources: kernelFiles.map { .embedInCode($0) }
        ),
        .target(
            name: "CLNet",
            dependencies: ["COpenCL", "CCLBlast", "CZlib", "CTurboJPEG", "CPNG", "CLNetKernels"]
        ),
        .target(
            name: "CLNetCLI",
            dependencies: ["CLNet"]
        ),
        .executableTarget(
            name: "clnet",
            dependencies: ["CLNet", "CLNetCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "clnet-bench",
            dependencies: ["CLNet", "CLNetCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/clnet-bench"
        ),
        // The example program of README.md: a training loop on the library alone.
        .executableTarget(
            name: "train-fashion-mnist",
            dependencies: ["CLNet"],
            path: "Examples/TrainFashionMNIST"
        ),
        // Training on a folder of photos and classifying with the result.
        .executableTarget(
            name: "train-image-folder",
            dependencies: ["CLNet"],
            path: "Examples/ImageFolder"
        ),
        .testTarget(
            name: "CLNetTests",
            // The image libraries write the images the decoding tests read.
            dependencies: ["CLNet", "CLNetCLI", "CTurboJPEG", "CPNG"],
            // Read from the source tree by path (#filePath), not bundled.
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
