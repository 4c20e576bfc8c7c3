// `ipc send`, `ipc recv`, `ipc rm` and `ipc gc` with messages longer than a channel's slots, run
// from a shell as a user would.
#if canImport(Glibc)
import Glibc
#endif
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Testing

@Suite("ipc and channel loans", .serialized, .timeLimit(.minutes(5)))
struct ChannelLoanToolTests {
    /// A 200 KB line through a channel of 64-byte slots: `ipc send` and `ipc recv` carry it whole
    /// (through the loan heap), `ipc ls` shows the loan heap, `ipc rm` removes it with the channel.
    @Test func aLineLongerThanASlotTravelsThroughTheLoanHeap() throws {
        try withCleanNames("loantool") { name in
            let sent = try shell("(head -c 200000 /dev/zero | tr '\\0' 'a'; echo; echo short) | \"$IPC\" send \(name) --create --max-message-size 64")
            #expect(sent.termination == .exited(0), "\(sent.error)")
            let received = try ipc("recv", name, "--count", "2", "--timeout", "10")
            #expect(received.termination == .exited(0), "\(received.error)")
            let lines = received.output.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.count == 3 && lines[0] == Substring(String(repeating: "a", count: 200_000)) && lines[1] == "short")
            let listed = try ipc("ls")
            #expect(listed.output.contains(name + "~loans"))
            let removed = try ipc("rm", name)
            #expect(removed.termination == .exited(0) && removed.output.contains("and its loan heap"), "\(removed.output)")
            #expect(!SharedMemory.exists(name: name) && !SharedMemory.exists(name: name + "~loans"))
        }
    }

    /// The loan heap of a channel that is gone (removed as a bare segment) is removed by `ipc gc`;
    /// that of a channel that is there is not.
    @Test func gcRemovesLoanHeapsWhoseChannelIsGone() throws {
        try withCleanNames("loangc") { name in
            for suffix in ["-gone", "-kept"] {
                let channel = try Channel<[UInt8]>.create(name: name + suffix, capacity: 2, maxMessageSize: 64, lifetime: .persistent)
                try channel.blockingSend(Array(repeating: 1, count: 1000))
                channel.detach()
            }
            try SharedMemory.remove(name: name + "-gone")
            let dry = try ipc("gc", "--dry-run", "--prefix", name)
            #expect(dry.output.contains("would remove \(name)-gone~loans (loan heap"), "\(dry.output)")
            #expect(SharedMemory.exists(name: name + "-gone~loans"))
            let gc = try ipc("gc", "--prefix", name)
            #expect(gc.output.contains("removed \(name)-gone~loans (loan heap"), "\(gc.output)")
            #expect(!gc.output.contains("-kept"))
            #expect(!SharedMemory.exists(name: name + "-gone~loans") && SharedMemory.exists(name: name + "-kept~loans"))
            let reclaim = try ipc("gc", "--reclaim", "--prefix", name)
            #expect(reclaim.termination == .exited(0))
            let channel = try Channel<[UInt8]>.open(name: name + "-kept")
            #expect(try channel.blockingReceive(timeout: .seconds(5)) == Array(repeating: 1, count: 1000), "the message in flight was kept")
            channel.detach()
            try Channel<[UInt8]>.remove(name: name + "-kept")
        }
    }
}
