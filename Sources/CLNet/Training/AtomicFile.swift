// Files the user keeps (weights, checkpoints, outputs) are never left half-written: the bytes go
// to a temporary file beside the destination, are flushed to the disk, and only then renamed
// over it. A kill at any moment leaves either the old file or the new one, never a mix.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let posixWrite = Glibc.write
#else
private let posixWrite = Darwin.write
#endif

/// Writes files so that a kill at any moment leaves the old content or the new, never a mix.
public enum AtomicFile {
    /// Writes `bytes` to `path` atomically and durably.
    public static func write(_ bytes: [UInt8], to path: String) throws(CLNetError) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        // One fixed temporary name per destination: a write interrupted by a kill leaves at most
        // this one file, which the next write of the same file replaces.
        let temporary = "\(directory.isEmpty ? "/" : directory)/.\(name).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw failure("cannot write \(path) (its temporary \(temporary) cannot be created; does the folder exist, and may it be written?)")
        }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = posixWrite(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return true
        }
        guard ok, fsync(fd) == 0 else {
            let error = failure("cannot write \(path)")
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = failure("cannot replace \(path)")
            unlink(temporary)
            throw error
        }
        // The rename itself is durable once the folder is flushed.
        let dfd = open(directory.isEmpty ? "/" : directory, O_RDONLY)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    private static func failure(_ what: String) -> CLNetError {
        .invalidArgument("\(what): \(String(cString: strerror(errno)))")
    }
}
