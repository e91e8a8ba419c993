import Foundation

/// Anonymous memory the kernel is asked to back with 2 MiB pages (`MADV_HUGEPAGE`): random row
/// reads over gigabytes then miss the TLB far less often than over 4 KiB pages (BENCHMARKS.md,
/// "Resident tables"). Owns its mapping, unmapped at deinit.
package final class HugePageBuffer: @unchecked Sendable {
    // Invariant: `base` maps `mapped` bytes until deinit; writers fill it before sharing it.
    package let base: UnsafeMutableRawPointer
    package let count: Int
    private let mapped: Int
    static let hugePage = 2 << 20

    /// `count` zeroed bytes, 2 MiB-aligned; nil when the system refuses the mapping.
    package init?(count: Int) {
        guard count > 0 else { return nil }
        let (rounded, overflow) = count.addingReportingOverflow(Self.hugePage - 1)
        guard !overflow else { return nil }
        let length = rounded / Self.hugePage * Self.hugePage
        // Over-allocate by one huge page so that the start can be aligned to one.
        guard let p = mmap(nil, length + Self.hugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              p != MAP_FAILED else { return nil }
        let address = Int(bitPattern: p), aligned = (address + Self.hugePage - 1) / Self.hugePage * Self.hugePage
        if aligned > address { munmap(p, aligned - address) }
        let tail = (address + length + Self.hugePage) - (aligned + length)
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + length), tail) }
        base = UnsafeMutableRawPointer(bitPattern: aligned)!
        mapped = length
        self.count = count
        _ = madvise(base, length, MADV_HUGEPAGE)  // advice: without it the buffer still works in 4 KiB pages
    }

    deinit { munmap(base, mapped) }

    /// Memory the system can give without swapping (`MemAvailable` of /proc/meminfo), or the
    /// physical memory where that cannot be read: a resident table must fit in it, since its
    /// pages are filled at once and an overcommitted fill ends in the kernel killing the process.
    package static var availableBytes: Int {
        if let text = kernelFileText("/proc/meminfo"),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kib = Int(line.split(separator: " ").dropFirst().first ?? "") {
            return kib << 10
        }
        return Int(clamping: ProcessInfo.processInfo.physicalMemory)
    }
}
