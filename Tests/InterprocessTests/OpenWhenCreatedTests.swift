#if canImport(Glibc)
import Glibc
#endif
import Testing
import Interprocess
import InterprocessSystem
import InterprocessToolSupport
import Synchronization

/// The opens that wait for a creator (`openWhenCreated`, `blockingOpenWhenCreated`): a reader
/// started before the writer, a timeout, cancellation, and errors other than `notFound` ending the
/// wait at once.
@Suite("Open when created", .serialized, .timeLimit(.minutes(3)))
struct OpenWhenCreatedTests {
    static let kinds = ["segment", "mutex", "semaphore", "event", "condition", "rwlock", "variable", "heap", "channel", "broadcast", "service"]

    /// Creates the object of `kind` named `name` as the child checks it (a segment holding "ready",
    /// a semaphore of one unit, a set manual-reset event, a variable holding 42, a channel of
    /// strings holding "ready", a broadcast of 8 slots and 4 subscribers, a service of strings of
    /// 4 slots and 64-byte requests); returns its close.
    static func create(_ kind: String, _ name: String) throws -> () -> Void {
        switch kind {
        case "segment":
            // Named with its value in it: a create and then a write would let the reader in between.
            return try SharedMemory.create(name: name, string: "ready").close
        case "mutex": return try ProcessMutex.create(name: name).close
        case "semaphore": return try ProcessSemaphore.create(name: name, value: 1).close
        case "event": return try ProcessEvent.create(name: name, mode: .manualReset, initiallySet: true).close
        case "condition": return try ProcessCondition.create(name: name).close
        case "rwlock": return try ProcessRWLock.create(name: name).close
        case "variable": return try SharedVariable<UInt64>.create(name: name, initialValue: 42).close
        case "heap": return try SharedHeap.create(name: name, capacity: 64 * 1024).close
        case "channel":
            let channel = try Channel<String>.create(name: name, capacity: 4)
            #expect(try channel.trySend("ready"))
            return channel.detach
        case "broadcast": return try Broadcast<String>.create(name: name, capacity: 8, maxSubscribers: 4).detach
        case "service": return try Service<String, String>.create(name: name, capacity: 4, maxRequestSize: 64).detach
        default: fatalError("unknown kind \(kind)")
        }
    }

    /// A reader process starts first and waits (seen asleep, the name still absent); the object
    /// is created after that, and the reader opens it, completely initialized — in both forms.
    @Test(arguments: kinds, ["async", "blocking"])
    func readerStartedBeforeTheCreatorOpensIt(_ kind: String, _ form: String) async throws {
        let name = TestNames.make("owc-\(kind)")
        let reader = try Peer.spawn("obj-open-when-created", kind, name, form, "60000")
        defer { reader.stop() }
        #expect(reader.readLine() == "waiting")
        #expect(await eventually { processState(reader.pid) == "S" })
        #expect(TestNames.leftovers(name).isEmpty, "the name exists before the creator ran")
        let close = try Self.create(kind, name)
        #expect(reader.readLine(timeout: .seconds(30)) == "opened ok")
        reader.tell()
        #expect(reader.wait(timeout: .seconds(30)) == .exited(0))
        close()
        #expect(TestNames.leftovers(name).isEmpty)
    }

    /// With no creator, both forms give up with `timedOut` after their timeout (for a primitive
    /// and for each message kind).
    @Test(arguments: ["mutex", "channel", "broadcast", "service"], ["async", "blocking"])
    func timesOutWithoutACreator(_ kind: String, _ form: String) throws {
        let name = TestNames.make("owc-timeout")
        let reader = try Peer.spawn("obj-open-when-created", kind, name, form, "200")
        defer { reader.stop() }
        #expect(reader.readLine() == "waiting")
        #expect(reader.readLine(timeout: .seconds(30)) == "error timedOut")
        #expect(reader.wait(timeout: .seconds(30)) == .exited(0))
    }

    @Test func timesOutInThisProcess() async throws {
        let name = TestNames.make("owc-timeout-here")
        let start = Clock.monotonicNanoseconds()
        await #expect(throws: InterprocessError.self) {
            do throws(InterprocessError) {
                _ = try await ProcessSemaphore.openWhenCreated(name: name, timeout: .milliseconds(50))
            } catch {
                #expect(error.code == .timedOut, "\(error)")
                throw error
            }
        }
        #expect(Clock.monotonicNanoseconds() - start >= 50_000_000)
        expectError(.timedOut) { try SharedMemory.blockingOpenWhenCreated(name: name, timeout: .zero) }
    }

    /// A cancelled wait ends promptly with `cancelled` and holds nothing: the object created after
    /// it, `.whileReferenced`, goes away with its creator's close.
    @Test func cancellationOpensNothing() async throws {
        let name = TestNames.make("owc-cancel")
        let started = StartedFlag()
        try await onOwnQueue { executor in
            let waiter = Task(executorPreference: executor) { () async throws -> ProcessEvent in
                started.value.store(true, ordering: .releasing)
                return try await ProcessEvent.openWhenCreated(name: name)
            }
            #expect(await eventually { started.value.load(ordering: .acquiring) })
            let cancelledAt = Clock.monotonicNanoseconds()
            waiter.cancel()
            switch await waiter.result {
            case .success(let event):
                event.close()
                Issue.record("a cancelled wait opened the event")
            case .failure(let error):
                #expect((error as? InterprocessError)?.code == .cancelled, "\(error)")
            }
            #expect(Double(Clock.monotonicNanoseconds() - cancelledAt) / 1e9 < promptly)
            let event = try ProcessEvent.create(name: name, mode: .manualReset)
            event.close()
            #expect(TestNames.leftovers(name).isEmpty, "a cancelled wait holds the event")
        }
    }

    /// An object of another kind under the name ends the wait at once (`incompatible`): only
    /// `notFound` is waited out.
    @Test func anotherKindEndsTheWaitAtOnce() async throws {
        let name = TestNames.make("owc-kind")
        let mutex = try ProcessMutex.create(name: name)
        defer { mutex.close() }
        await #expect(throws: InterprocessError.self) {
            do throws(InterprocessError) {
                _ = try await ProcessSemaphore.openWhenCreated(name: name, timeout: .seconds(60))
            } catch {
                #expect(error.code == .incompatible, "\(error)")
                throw error
            }
        }
    }

    /// A channel, broadcast or service whose messages are of another type ends the wait at once
    /// (`incompatible`), in both forms; so does another kind under the name.
    @Test func anIncompatibleMessageTypeEndsTheWaitAtOnce() async throws {
        let name = TestNames.make("owc-types")
        let channel = try Channel<String>.create(name: name + "-c", capacity: 4)
        defer { channel.detach() }
        let broadcast = try Broadcast<String>.create(name: name + "-b", capacity: 4)
        defer { broadcast.detach() }
        let service = try Service<String, String>.create(name: name + "-s", capacity: 4)
        defer { service.detach() }
        let mutex = try ProcessMutex.create(name: name + "-m")
        defer { mutex.close() }
        let start = Clock.monotonicNanoseconds()
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Channel<UInt64>.openWhenCreated(name: name + "-c", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Channel<[UInt8]>.openWhenCreated(name: name + "-c", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Channel<String>.openWhenCreated(name: name + "-b", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Broadcast<Int32>.openWhenCreated(name: name + "-b", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Broadcast<String>.openWhenCreated(name: name + "-m", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Service<[UInt8], [UInt8]>.openWhenCreated(name: name + "-s", timeout: .seconds(60)) }
        await expectIncompatible { () async throws(InterprocessError) in _ = try await Service<String, String>.openWhenCreated(name: name + "-c", timeout: .seconds(60)) }
        blockingExpectIncompatible { () throws(InterprocessError) in _ = try Channel<UInt64>.blockingOpenWhenCreated(name: name + "-c", timeout: .seconds(60)) }
        blockingExpectIncompatible { () throws(InterprocessError) in _ = try Broadcast<[UInt8]>.blockingOpenWhenCreated(name: name + "-b", timeout: .seconds(60)) }
        blockingExpectIncompatible { () throws(InterprocessError) in _ = try Service<UInt64, UInt64>.blockingOpenWhenCreated(name: name + "-s", timeout: .seconds(60)) }
        #expect(Double(Clock.monotonicNanoseconds() - start) / 1e9 < 30, "an incompatible object was waited for")
        // The right types open at once.
        let openedChannel = try await Channel<String>.openWhenCreated(name: name + "-c", timeout: .seconds(60))
        openedChannel.detach()
        let openedBroadcast = try await Broadcast<String>.openWhenCreated(name: name + "-b", timeout: .seconds(60))
        openedBroadcast.detach()
        let openedService = try await Service<String, String>.openWhenCreated(name: name + "-s", timeout: .seconds(60))
        openedService.detach()
    }

    /// Every message-type overload of the three message kinds opens what a creator of the same
    /// types made, in both forms: bytes, strings, JSON (`Codable`), raw (`BitwiseCopyable`, also when
    /// `Codable`); for a service, each request/response pairing.
    @Test func everyMessageTypeOpens() async throws {
        let name = TestNames.make("owc-every")
        var created: [() -> Void] = []
        defer { for detach in created { detach() } }
        created.append(try Channel<[UInt8]>.create(name: name + "-c1", capacity: 2).detach)
        created.append(try Channel<String>.create(name: name + "-c2", capacity: 2).detach)
        created.append(try Channel<OpenedNote>.create(name: name + "-c3", capacity: 2).detach)
        created.append(try Channel<RawPoint>.create(name: name + "-c4", capacity: 2).detach)
        created.append(try Channel<UInt64>.create(name: name + "-c5", capacity: 2).detach)
        created.append(try Broadcast<[UInt8]>.create(name: name + "-b1", capacity: 2).detach)
        created.append(try Broadcast<String>.create(name: name + "-b2", capacity: 2).detach)
        created.append(try Broadcast<OpenedNote>.create(name: name + "-b3", capacity: 2).detach)
        created.append(try Broadcast<RawPoint>.create(name: name + "-b4", capacity: 2).detach)
        created.append(try Broadcast<UInt64>.create(name: name + "-b5", capacity: 2).detach)
        created.append(try Service<[UInt8], [UInt8]>.create(name: name + "-s1", capacity: 2).detach)
        created.append(try Service<String, String>.create(name: name + "-s2", capacity: 2).detach)
        created.append(try Service<OpenedNote, OpenedNote>.create(name: name + "-s3", capacity: 2).detach)
        created.append(try Service<RawPoint, RawPoint>.create(name: name + "-s4", capacity: 2).detach)
        created.append(try Service<UInt64, Int32>.create(name: name + "-s5", capacity: 2).detach)
        let wait = Duration.seconds(60)
        try await Channel<[UInt8]>.openWhenCreated(name: name + "-c1", timeout: wait).detach()
        try await Channel<String>.openWhenCreated(name: name + "-c2", timeout: wait).detach()
        try await Channel<OpenedNote>.openWhenCreated(name: name + "-c3", timeout: wait).detach()
        try await Channel<RawPoint>.openWhenCreated(name: name + "-c4", timeout: wait).detach()
        try await Channel<UInt64>.openWhenCreated(name: name + "-c5", timeout: wait).detach()
        try await Broadcast<[UInt8]>.openWhenCreated(name: name + "-b1", timeout: wait).detach()
        try await Broadcast<String>.openWhenCreated(name: name + "-b2", timeout: wait).detach()
        try await Broadcast<OpenedNote>.openWhenCreated(name: name + "-b3", timeout: wait).detach()
        try await Broadcast<RawPoint>.openWhenCreated(name: name + "-b4", timeout: wait).detach()
        try await Broadcast<UInt64>.openWhenCreated(name: name + "-b5", timeout: wait).detach()
        try await Service<[UInt8], [UInt8]>.openWhenCreated(name: name + "-s1", timeout: wait).detach()
        try await Service<String, String>.openWhenCreated(name: name + "-s2", timeout: wait).detach()
        try await Service<OpenedNote, OpenedNote>.openWhenCreated(name: name + "-s3", timeout: wait).detach()
        try await Service<RawPoint, RawPoint>.openWhenCreated(name: name + "-s4", timeout: wait).detach()
        try await Service<UInt64, Int32>.openWhenCreated(name: name + "-s5", timeout: wait).detach()
        try blockingOpenEveryMessageType(name, timeout: wait)
    }

    /// A segment that another user created under the name is not waited for and not opened
    /// (`permissionDenied` at once) unless that user is trusted; trusted, it opens.
    @Test func anUntrustedCreatorIsRefusedAtOnce() throws {
        guard canActAsAnotherUser("anUntrustedCreatorIsRefusedAtOnce") else { return }
        try withCleanNames("owc-trust") { name in
            let creator = try Peer.spawn("--as-nobody", "create-hold", name, "256", "whileReferenced", "60", "644")
            defer { creator.stop() }
            #expect(creator.readLine() == "ready")
            expectError(.permissionDenied) { try SharedMemory.blockingOpenWhenCreated(name: name, timeout: .seconds(60)) }
            let segment = try SharedMemory.blockingOpenWhenCreated(name: name, trusting: .users([65534]), timeout: .seconds(60))
            #expect(try segment.readString().hasPrefix("hello from"))
            segment.close()
            creator.tell()
            #expect(creator.wait(timeout: .seconds(30)) == .exited(0))
        }
    }
}

/// A `Codable` message that travels as JSON.
private struct OpenedNote: Codable, Sendable { var text: String }

/// A `BitwiseCopyable` message that travels raw.
private struct RawPoint: BitwiseCopyable, Sendable { var x: Int32; var y: Int32 }

/// The blocking forms of ``OpenWhenCreatedTests/everyMessageTypeOpens()``.
private func blockingOpenEveryMessageType(_ name: String, timeout wait: Duration) throws {
    try Channel<[UInt8]>.blockingOpenWhenCreated(name: name + "-c1", timeout: wait).detach()
    try Channel<String>.blockingOpenWhenCreated(name: name + "-c2", timeout: wait).detach()
    try Channel<OpenedNote>.blockingOpenWhenCreated(name: name + "-c3", timeout: wait).detach()
    try Channel<RawPoint>.blockingOpenWhenCreated(name: name + "-c4", timeout: wait).detach()
    try Channel<UInt64>.blockingOpenWhenCreated(name: name + "-c5", timeout: wait).detach()
    try Broadcast<[UInt8]>.blockingOpenWhenCreated(name: name + "-b1", timeout: wait).detach()
    try Broadcast<String>.blockingOpenWhenCreated(name: name + "-b2", timeout: wait).detach()
    try Broadcast<OpenedNote>.blockingOpenWhenCreated(name: name + "-b3", timeout: wait).detach()
    try Broadcast<RawPoint>.blockingOpenWhenCreated(name: name + "-b4", timeout: wait).detach()
    try Broadcast<UInt64>.blockingOpenWhenCreated(name: name + "-b5", timeout: wait).detach()
    try Service<[UInt8], [UInt8]>.blockingOpenWhenCreated(name: name + "-s1", timeout: wait).detach()
    try Service<String, String>.blockingOpenWhenCreated(name: name + "-s2", timeout: wait).detach()
    try Service<OpenedNote, OpenedNote>.blockingOpenWhenCreated(name: name + "-s3", timeout: wait).detach()
    try Service<RawPoint, RawPoint>.blockingOpenWhenCreated(name: name + "-s4", timeout: wait).detach()
    try Service<UInt64, Int32>.blockingOpenWhenCreated(name: name + "-s5", timeout: wait).detach()
}

/// Expects `body` to throw `incompatible`.
private func expectIncompatible(_ body: () async throws(InterprocessError) -> Void) async {
    do throws(InterprocessError) {
        try await body()
        Issue.record("opened an object of another type")
    } catch {
        #expect(error.code == .incompatible, "\(error)")
    }
}

/// Expects `body` to throw `incompatible` (the blocking forms).
private func blockingExpectIncompatible(_ body: () throws(InterprocessError) -> Void) {
    do throws(InterprocessError) {
        try body()
        Issue.record("opened an object of another type")
    } catch {
        #expect(error.code == .incompatible, "\(error)")
    }
}

/// A flag a task raises when it has started (shared with the test that waits for it).
private final class StartedFlag: Sendable {
    let value = Atomic<Bool>(false)
}
