// The OpenCL C files of this folder, embedded at build time by SwiftPM (`.embedInCode` in
// Package.swift), so that a statically linked CLNet needs no file beside it. CLNet reads them
// through `KernelSource`; this module only carries the bytes.

/// The embedded kernel files, by file name (e.g. "Util.cl").
public let embeddedKernelFiles: [String: [UInt8]] = [
    "Util.cl": PackageResources.Util_cl,
]
