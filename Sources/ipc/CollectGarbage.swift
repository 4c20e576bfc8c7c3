import ArgumentParser
import Interprocess
import InterprocessToolSupport

/// `ipc gc`: removes segments nobody will use again.
struct CollectGarbage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove abandoned segments (every holder died), half-made or half-removed ones, the stores of heaps that are gone, and stale socket files; sweep the entries of processes that died from the tables of participants of channels, message queues and services."
    )

    @OptionGroup var trust: TrustOptions

    @Flag(help: "Only report what would be removed.")
    var dryRun = false

    @Flag(help: "Print a JSON array of what was removed, swept or reclaimed (or would be): segments and socket files as `ipc ls --json` lists them, then one object per table of participants swept and per heap reclaimed in (`action`, `kind`, `name`, and `entries`, or `blocks`, `bytes`, `pids`, or `error`).")
    var json = false

    @Option(help: "Only consider segments whose name starts with this prefix.")
    var prefix = ""

    @Flag(help: "Also free, in every heap, the blocks of processes that ended (only if your processes never share a block they did not adopt: see the README; in a channel's loan heap, only blocks no message needs).")
    var reclaim = false

    func run() throws {
        // Shown by file name, never by the name the header claims.
        let removed = SharedMemory.collectGarbage(dryRun: dryRun, prefix: prefix, trusting: trust.trusted).map { info in
            var info = info
            info.name = info.fileName
            return info
        }
        // The stores of heaps that are gone (the heaps just swept among them).
        let orphans = SharedHeap.collectOrphanStores(dryRun: dryRun, prefix: prefix, trusting: trust.trusted)
        // The loan heaps of channels that are gone (the channels just swept among them).
        let loanHeaps = ChannelLoanHeaps.collectOrphans(dryRun: dryRun, prefix: prefix, trusting: trust.trusted).map { info in
            var info = info
            info.name = info.fileName
            return info
        }
        // Before the stale socket files: a sweep removes the readiness socket files of the entries it frees.
        let swept = sweepParticipants()
        let removedLocal = LocalObjects.collectGarbage(dryRun: dryRun, prefix: prefix)
        let reclaimed = reclaim ? reclaimHeaps() : []
        if json {
            StandardStream.write(try Format.json(
                (removed + orphans + loanHeaps).map(ListEntry.segment) + removedLocal.map(ListEntry.local)
                    + (reclaimed + swept).map(ListEntry.garbage)))
            return
        }
        for action in reclaimed { say(action.line) }
        for action in swept { say(action.line) }
        guard !removed.isEmpty || !orphans.isEmpty || !loanHeaps.isEmpty || !removedLocal.isEmpty || !swept.isEmpty else {
            say("nothing to remove")
            return
        }
        for info in removed.sorted(by: { $0.name < $1.name }) {
            say("\(dryRun ? "would remove" : "removed") \(info.name) (\(info.kind), \(Format.bytes(info.size)); \(Format.staleReason(info)))")
        }
        for info in orphans.sorted(by: { $0.name < $1.name }) {
            say("\(dryRun ? "would remove" : "removed") \(info.name) (heap store, \(Format.bytes(info.size)); its heap is gone)")
        }
        for info in loanHeaps.sorted(by: { $0.name < $1.name }) {
            say("\(dryRun ? "would remove" : "removed") \(info.name) (loan heap, \(Format.bytes(info.size)); its channel is gone)")
        }
        for info in removedLocal {
            say("\(dryRun ? "would remove" : "removed") \(info.path) (socket; \(LocalListing.staleReason))")
        }
    }

    /// Sweeps (or, with `--dry-run`, counts) the entries of processes that died in the tables of
    /// participants of every channel, message queue and service that matches the prefix and is
    /// in use (an abandoned one was just removed, or would be), with their readiness socket files;
    /// one line per object that had any. Only objects whose `ipc inspect` lists an ended entry are
    /// opened (not as a participant: ``ParticipantsSweep``).
    func sweepParticipants() -> [GarbageAction] {
        var actions: [GarbageAction] = []
        for info in SharedMemory.list().sorted(by: { $0.name < $1.name }) where info.name.hasPrefix(prefix) {
            guard ParticipantsSweep.hasTable(kind: info.kind), info.problem == nil, info.state == "ready", !info.isAbandoned else { continue }
            let ended = ParticipantsSweep.endedEntries(inDetails: info.details)
            guard ended > 0 else { continue }
            let count: Int
            if dryRun {
                count = ended
            } else {
                do {
                    guard let swept = try ParticipantsSweep.sweepDead(name: info.name, kind: info.kind, trusting: trust.trusted) else { continue }
                    count = swept
                } catch {
                    actions.append(GarbageAction(action: "could not sweep", kind: info.kind, name: info.name, error: ToolError.message(for: error) ?? "\(error)"))
                    continue
                }
            }
            guard count > 0 else { continue }
            actions.append(GarbageAction(action: dryRun ? "would sweep" : "swept", kind: info.kind, name: info.name, entries: count))
        }
        return actions
    }

    /// Frees (or counts) the blocks of ended processes in every heap that matches the prefix and is
    /// held; one line per heap that had any.
    func reclaimHeaps() -> [GarbageAction] {
        var actions: [GarbageAction] = []
        for info in SharedMemory.list().sorted(by: { $0.name < $1.name }) where info.name.hasPrefix(prefix) {
            guard info.kind == SegmentKind.heap.description, info.details["store"] == nil, info.problem == nil,
                  info.state == "ready", !info.isAbandoned
            else { continue }
            do {
                let result: SharedHeap.Reclamation
                if let channelName = ChannelLoanHeaps.channel(ofLoanHeap: info.name), let channel = try? Channel<[UInt8]>.openAnyType(name: channelName, trusting: trust.trusted) {
                    // A channel's loan heap: only what no message in the channel needs.
                    defer { channel.detach() }
                    result = try channel.reclaimLoans(dryRun: dryRun)
                } else {
                    let heap = try HeapReport.open(info.name, info: info, trusting: trust.trusted)
                    defer { heap.close() }
                    result = try heap.reclaimBlocksOfEndedProcesses(dryRun: dryRun)
                }
                guard result.blocks > 0 else { continue }
                actions.append(GarbageAction(
                    action: dryRun ? "would reclaim" : "reclaimed", kind: info.kind, name: info.name,
                    blocks: result.blocks, bytes: result.bytes, pids: result.processes.map(Int.init)))
            } catch {
                actions.append(GarbageAction(action: "could not reclaim", kind: info.kind, name: info.name, error: ToolError.message(for: error) ?? "\(error)"))
            }
        }
        return actions
    }
}

/// What `ipc gc` did (or would do) to one object besides removing it: swept the entries of ended
/// processes from its table of participants, or reclaimed blocks of ended processes in a heap; a
/// line of its report, or an object of its `--json` array.
struct GarbageAction: Encodable {
    /// "swept", "would sweep", "reclaimed", "would reclaim", "could not sweep", "could not reclaim".
    let action: String
    let kind: String
    let name: String
    /// Entries of ended processes swept from the table of participants.
    var entries: Int?
    /// Blocks (and their bytes) of ended processes reclaimed, and the pids that are known.
    var blocks: Int?
    var bytes: Int?
    var pids: [Int]?
    var error: String?

    /// The report's line.
    var line: String {
        if let error { return "\(action) \(action.hasSuffix("reclaim") ? "in" : "the participants of") \(kind) \(name): \(error)" }
        if let entries {
            return "\(action) \(entries) entr\(entries == 1 ? "y" : "ies") of ended processes (and their readiness socket files) from the participants of \(kind) \(name)"
        }
        let count = blocks ?? 0
        // No pid: only blocks of processes whose records were recycled (their pids are forgotten).
        let known = (pids ?? []).isEmpty ? "" : " (pid \((pids ?? []).map(String.init).joined(separator: ", ")))"
        return "\(action) \(count) block\(count == 1 ? "" : "s") (\(Format.bytes(bytes ?? 0))) of ended processes\(known) in heap \(name)"
    }
}
