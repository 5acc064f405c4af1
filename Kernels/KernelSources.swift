// The OpenCL C files of this folder, embedded at build time by SwiftPM (`.embedInCode` in
// Package.swift), so that a statically linked CLNet needs no file beside it. CLNet reads them
// through `KernelSource`; this module only carries the bytes.

/// The embedded kernel files, by file name (e.g. "Conv.cl").
public let embeddedKernelFiles: [String: [UInt8]] = [
    "Common.cl": PackageResources.Common_cl,
    "Util.cl": PackageResources.Util_cl,
    "Activation.cl": PackageResources.Activation_cl,
    "Elementwise.cl": PackageResources.Elementwise_cl,
    "Norm.cl": PackageResources.Norm_cl,
    "Pool.cl": PackageResources.Pool_cl,
    "Concat.cl": PackageResources.Concat_cl,
    "Linear.cl": PackageResources.Linear_cl,
    "Loss.cl": PackageResources.Loss_cl,
    "Optimizer.cl": PackageResources.Optimizer_cl,
    "Conv.cl": PackageResources.Conv_cl,
    "DeformConv.cl": PackageResources.DeformConv_cl,
    "DCLS.cl": PackageResources.DCLS_cl,
    "Dendritic.cl": PackageResources.Dendritic_cl,
    "Spiking.cl": PackageResources.Spiking_cl,
    "Winograd.cl": PackageResources.Winograd_cl,
    "ImplicitGEMM.cl": PackageResources.ImplicitGEMM_cl,
    "GEMM.cl": PackageResources.GEMM_cl,
    "Upsample.cl": PackageResources.Upsample_cl,
]
