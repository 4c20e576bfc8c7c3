import SystemPackage
import CInterprocess
import InterprocessSystem

/// Where a channel's shared state lives and what keeps it mapped: a named segment of kind
/// ``SegmentKind/channel`` holding one `cipc_channel` and its slots at the payload offset.
///
/// Only this file knows how the segment is created and opened; the channel's protocol
/// (``ChannelRing``) and its public face (``Channel``) see a base pointer, the bytes available and
/// this process's lease. It is shaped like the shared-objects framework's storage (a kind's size
/// for its parameters, initialize, validate before trusting), so that moving the channel onto the
/// framework replaces this file and nothing else.
///
/// `@unchecked Sendable`: `base` points into a mapping that `mapping` keeps alive; the state is
/// touched only through atomics by the ring.
final class ChannelStorage: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let available: Int
    let mapping: MemoryMapping
    let segment: SegmentHandle
    let lease: OwnerLease?

    private init(segment: SegmentHandle) throws(InterprocessError) {
        self.segment = segment
        mapping = try segment.mapping()
        base = mapping.base + SegmentHeader.size
        available = segment.payloadSize
        lease = try segment.ownerLease()
    }

    var name: String? { segment.name }

    /// Unregisters this process's handle (the last holder of a `.whileReferenced` channel removes it).
    func close() { segment.close() }

    /// Creates a named channel with `parameters`; of racing creators exactly one succeeds, the
    /// others get `alreadyExists`. The segment gets its name only once it is complete.
    static func create(
        name: String, parameters: ChannelParameters, permissions: FilePermissions, lifetime: Lifetime
    ) throws(InterprocessError) -> ChannelStorage {
        let size = try named(name) { () throws(InterprocessError) in try ChannelLayout.size(for: parameters) }
        let handle = try SegmentHandle.create(
            name: name, kind: .channel, payloadSize: size, permissions: permissions, lifetime: lifetime
        ) { payload in
            ChannelLayout.initialize(payload.baseAddress!, size: size, with: parameters)
        }
        do throws(InterprocessError) {
            return try ChannelStorage(segment: handle)
        } catch {
            handle.close()
            throw error
        }
    }

    /// Opens the named channel `name`, checking it before anything trusts it; with `messageType`, also
    /// that its messages are of that type (`incompatible` otherwise).
    static func open(
        name: String, expecting messageType: ChannelMessageType?, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> ChannelStorage {
        let handle = try SegmentHandle.open(name: name, kind: .channel, trusting: trust)
        do throws(InterprocessError) {
            let storage = try ChannelStorage(segment: handle)
            _ = try named(name) { () throws(InterprocessError) in
                try ChannelLayout.validate(storage.base, available: storage.available, expecting: messageType)
            }
            return storage
        } catch {
            handle.close()
            throw error
        }
    }

    /// Opens the named channel, or creates it if there is none; `created` says which. Of racing
    /// processes exactly one creates it; the others open it, complete.
    static func openOrCreate(
        name: String, parameters: ChannelParameters, permissions: FilePermissions, lifetime: Lifetime, trusting trust: TrustedOwners
    ) throws(InterprocessError) -> (ChannelStorage, Bool) {
        for _ in 0..<64 {
            do throws(InterprocessError) {
                return (try create(name: name, parameters: parameters, permissions: permissions, lifetime: lifetime), true)
            } catch where error.code == .alreadyExists {}
            do throws(InterprocessError) {
                return (try open(name: name, expecting: parameters.messageType, trusting: trust), false)
            } catch where error.code == .notFound {}
        }
        throw InterprocessError(.createFailed, objectName: name, detail: "it kept appearing and disappearing")
    }

    /// Runs `body`, giving an error it throws without a name the object's name.
    private static func named<R>(_ name: String, _ body: () throws(InterprocessError) -> R) throws(InterprocessError) -> R {
        do throws(InterprocessError) {
            return try body()
        } catch {
            var error = error
            if error.objectName == nil { error.objectName = name }
            throw error
        }
    }
}
