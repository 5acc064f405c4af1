// Folders of photos in torchvision's ImageFolder layout, `DIR/train/<class>/...` and
// `DIR/val/<class>/...`, with the same class order and label numbers as torchvision gives them.

import FoundationEssentials

/// The image files of one split of an image folder, and their labels.
public struct ImageList: Sendable, Equatable {
    /// The split's folder.
    public let directory: String
    /// Class names in label order: the sorted names of the class folders.
    public let classes: [String]
    /// Paths of the images, class by class, each class's files sorted.
    public let files: [String]
    public let labels: [Int32]
    /// Files that were not taken because their names do not end in .jpg, .jpeg or .png.
    public let skippedFiles: Int

    /// The extensions taken, compared without regard to case.
    public static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// Lists `directory/<class>/...` (subfolders of a class included, as torchvision walks them).
    public init(scanning directory: String) throws(CLNetError) {
        let fm = FileManager.default
        var isDirectory = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory else {
            throw .invalidDataset("there is no folder \(directory); an image folder holds train/<class>/... and val/<class>/...")
        }
        let names = (try? fm.contentsOfDirectory(atPath: directory)) ?? []
        let classes = names.filter { name in
            var d = false
            return fm.fileExists(atPath: directory + "/" + name, isDirectory: &d) && d
        }.sorted(by: Self.pythonOrder)
        guard !classes.isEmpty else {
            throw .invalidDataset("\(directory) has no class folders; put each class's images in \(directory)/<class name>/")
        }
        var files: [String] = [], labels: [Int32] = [], skipped = 0
        for (label, name) in classes.enumerated() {
            var taken = 0
            for path in Self.walk(directory + "/" + name) {
                if Self.isImageName(path) {
                    files.append(path)
                    labels.append(Int32(label))
                    taken += 1
                } else {
                    skipped += 1
                }
            }
            guard taken > 0 else {
                throw .invalidDataset("the class folder \(directory)/\(name) has no .jpg, .jpeg or .png files; remove it or add its images")
            }
        }
        self.init(directory: directory, classes: classes, files: files, labels: labels, skippedFiles: skipped)
    }

    /// Files given one by one (`clnet predict`'s), all under one unnamed class, as they are: the
    /// name check is the caller's, since the format is read from the bytes anyway.
    public init(files: [String]) {
        self.init(directory: "", classes: [""], files: files, labels: [Int32](repeating: 0, count: files.count), skippedFiles: 0)
    }

    private init(directory: String, classes: [String], files: [String], labels: [Int32], skippedFiles: Int) {
        self.directory = directory
        self.classes = classes
        self.files = files
        self.labels = labels
        self.skippedFiles = skippedFiles
    }

    public var count: Int { files.count }

    /// `n` images spread evenly over the list (all of them if there are fewer), so that a
    /// quick run still sees every class.
    public func subset(_ n: Int) -> ImageList {
        guard n < count else { return self }
        let picked = (0..<max(n, 0)).map { $0 * count / max(n, 1) }
        return ImageList(directory: directory, classes: classes, files: picked.map { files[$0] },
                         labels: picked.map { labels[$0] }, skippedFiles: skippedFiles)
    }

    /// Whether a path's file name ends in one of `extensions`, in any case.
    public static func isImageName(_ path: String) -> Bool {
        let name = path.split(separator: "/").last ?? ""
        guard let dot = name.lastIndex(of: ".") else { return false }
        return extensions.contains(name[name.index(after: dot)...].lowercased())
    }

    /// Python's `sorted` on strings: by code point, which torchvision's class order follows.
    static func pythonOrder(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars)
    }

    /// Every file under `folder` in torchvision's order, `sorted(os.walk(folder, followlinks=True))`:
    /// the folders by their whole path, each folder's files by name (at most 32 folders deep,
    /// against link loops).
    public static func walk(_ folder: String) -> [String] {
        let fm = FileManager.default
        var folders: [String] = [], files: [String: [String]] = [:]
        func visit(_ dir: String, depth: Int) {
            folders.append(dir)
            var own: [String] = []
            for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] {
                let path = dir + "/" + name
                var d = false
                guard fm.fileExists(atPath: path, isDirectory: &d) else { continue }
                if !d {
                    own.append(name)
                } else if depth < 32 {
                    visit(path, depth: depth + 1)
                }
            }
            files[dir] = own.sorted(by: pythonOrder)
        }
        visit(folder, depth: 0)
        return folders.sorted(by: pythonOrder).flatMap { dir in (files[dir] ?? []).map { dir + "/" + $0 } }
    }
}

/// A data set of photos in torchvision's `ImageFolder` layout: `root/train/<class>/...` and
/// `root/val/<class>/...`. Class names are the sorted folder names, and a label is a class's
/// place in that order, as in torchvision.
public struct ImageFolder: Sendable {
    public let root: String
    public let train: ImageList
    public let validation: ImageList

    /// Scans both splits, and refuses a layout that cannot be trained on.
    public init(root: String) throws(CLNetError) {
        for split in ["train", "val"] {
            var d = false
            guard FileManager.default.fileExists(atPath: root + "/" + split, isDirectory: &d), d else {
                throw .invalidDataset("""
                    \(root) has no \(split)/ folder; an image folder holds train/<class>/<image> and \
                    val/<class>/<image>, with the same class folders in both
                    """)
            }
        }
        train = try ImageList(scanning: root + "/train")
        validation = try ImageList(scanning: root + "/val")
        guard train.classes == validation.classes else {
            let onlyTrain = Set(train.classes).subtracting(validation.classes).sorted()
            let onlyVal = Set(validation.classes).subtracting(train.classes).sorted()
            throw .invalidDataset("""
                the classes of \(root)/val differ from those of \(root)/train \
                (only in train: \(onlyTrain.isEmpty ? "none" : onlyTrain.joined(separator: ", ")); \
                only in val: \(onlyVal.isEmpty ? "none" : onlyVal.joined(separator: ", "))); \
                both splits need the same class folders
                """)
        }
        self.root = root
    }

    public var classes: [String] { train.classes }

    /// Writes the class names, one per line in label order, as `clnet predict` reads them.
    public static func writeClasses(_ classes: [String], to url: URL) throws(CLNetError) {
        try AtomicFile.write(Array(classes.map { $0 + "\n" }.joined().utf8), to: url.path)
    }

    /// Reads a class list written by `writeClasses` (or by hand: one name per line).
    public static func readClasses(_ url: URL) throws(CLNetError) -> [String] {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw .invalidArgument("cannot read the class list \(url.path): \(error)")
        }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            .reversed().drop(while: \.isEmpty).reversed()
    }
}

/// The images of an `ImageList`, decoded and put through a transform as they are needed.
public struct ImageFolderSamples: SampleSource {
    public let images: ImageList
    public let transform: ImageTransform

    public init(images: ImageList, transform: ImageTransform) {
        self.images = images
        self.transform = transform
    }

    public var count: Int { images.count }
    public var classes: Int { images.classes.count }
    public var channels: Int { 3 }
    public var height: Int { transform.size }
    public var width: Int { transform.size }
    public func label(of sample: Int) -> Int { Int(images.labels[sample]) }
    public func file(of sample: Int) -> String? { images.files[sample] }
    public var normalization: (mean: [Float], std: [Float])? { (transform.mean, transform.std) }
    public var classNames: [String]? { images.classes }

    /// The transform decides the augmentation (torchvision's training or evaluation one), so
    /// `augment` is not read.
    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator,
                        into out: UnsafeMutableBufferPointer<Float>, offset: Int) throws(CLNetError) {
        transform.apply(try ImageFile.read(images.files[index]), rng: &rng, into: out, offset: offset)
    }
}
