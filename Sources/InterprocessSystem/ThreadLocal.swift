#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A thread-local slot: one pointer per thread, with a destructor that runs when a thread that set
/// it ends. The corresponding C functions are `pthread_key_create`, `pthread_getspecific`,
/// `pthread_setspecific` and `pthread_key_delete`.
///
/// A process has at most `PTHREAD_KEYS_MAX` (1024 on Linux) at once: ``make(destructor:)`` returns
/// nil beyond that. After ``delete()`` no destructor of the key runs any more, and a key that is
/// created again with the same number reads nil in every thread (glibc keeps a sequence number per
/// key), so a value is never taken for another key's.
package struct ThreadLocalKey: Sendable {
    private let key: pthread_key_t

    /// A new key whose `destructor` runs, on a thread that ends, with the value it had set (never
    /// nil); nil when the process has no key left.
    package static func make(destructor: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) -> ThreadLocalKey? {
        var key = pthread_key_t()
        guard pthread_key_create(&key, destructor) == 0 else { return nil }
        return ThreadLocalKey(key: key)
    }

    private init(key: pthread_key_t) { self.key = key }

    /// The calling thread's value (nil until it sets one).
    package func get() -> UnsafeMutableRawPointer? { pthread_getspecific(key) }

    /// Sets the calling thread's value; false if the system had no memory for it.
    @discardableResult
    package func set(_ value: UnsafeMutableRawPointer?) -> Bool { pthread_setspecific(key, value) == 0 }

    /// Gives the key back to the system: no destructor of it runs afterwards.
    package func delete() { pthread_key_delete(key) }
}
