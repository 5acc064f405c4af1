/// The plain-Swift reference of every operator, computed in Double: the definition of correct
/// that the OpenCL kernels are tested against, and the operators of the CPU backend.
///
/// Tensors are dense NCHW arrays with their `Shape`; parameters are plain arrays. Each family's
/// functions live in the file of the same name (Reference/ConvReference.swift beside Ops/Conv.swift; SwiftPM needs distinct file names).
public enum Reference {}
