// Every `async` verb of Interprocess, called from each context a program calls them from: top-level
// code (this file, an async context because it awaits), an `async` function, an actor's method and
// a `Task { }`. The build compiling this target is the test that the async forms resolve in each of
// them (issue 16: with a blocking overload of the same name, top-level code picked the blocking one
// and failed to compile). Running it (`InterprocessAsyncContexts PREFIX [LOCKFILE]`, as
// AsyncContextsTests does) checks that each call also does what it says, with every object named
// after PREFIX (the file lock at LOCKFILE) and removed at the end. It prints one line per context and exits 0, or throws (and fails) at the first error.
//
// Nothing here blocks a thread: every object is ready before it is waited on (a count of 1, a set
// event, a full variable, a connection made before it is accepted), and what each context takes it
// gives back, so that the next context finds the same state.

import Foundation
import Interprocess

let arguments = CommandLine.arguments.dropFirst()
let prefix = arguments.first ?? "ipc-async-contexts-\(ProcessInfo.processInfo.processIdentifier)"
let fileLockPath = arguments.dropFirst().first ?? FileManager.default.temporaryDirectory.path + "/" + prefix + ".lock"

/// Everything the contexts wait on, named after `prefix`.
struct Objects: Sendable {
    let mutex: ProcessMutex
    let semaphore: ProcessSemaphore
    let event: ProcessEvent
    let condition: ProcessCondition
    let rwLock: ProcessRWLock
    let variable: SharedVariable<Int>
    let watched: SharedWatchedValue<Int>
    let listener: LocalSocketListener
    let socketName: String
    let datagrams: LocalDatagramSocket
    let datagramName: String
    let pipePath: String
    let fileLock: FileLock
    let fileLockPath: String
    let appName: String

    init(prefix: String, fileLockPath: String) throws {
        mutex = try ProcessMutex.create(name: prefix + "-mutex")
        semaphore = try ProcessSemaphore.create(name: prefix + "-semaphore", value: 1)
        event = try ProcessEvent.create(name: prefix + "-event", mode: .manualReset, initiallySet: true)
        condition = try ProcessCondition.create(name: prefix + "-condition")
        rwLock = try ProcessRWLock.create(name: prefix + "-rwlock")
        variable = try SharedVariable<Int>.create(name: prefix + "-variable", initialValue: 1)
        watched = try SharedWatchedValue<Int>.create(name: prefix + "-watched", initialValue: 1)
        socketName = prefix + "-socket"
        listener = try LocalSocketListener.listen(name: socketName)
        datagramName = prefix + "-datagrams"
        datagrams = try LocalDatagramSocket.bind(name: datagramName)
        pipePath = try NamedPipe.create(name: prefix + "-pipe")
        self.fileLockPath = fileLockPath
        fileLock = try FileLock(path: fileLockPath)
        appName = prefix + "-app"
    }

    func close() throws {
        for primitive in [mutex.close, semaphore.close, event.close, condition.close, rwLock.close, variable.close, watched.close] { primitive() }
        listener.close()
        datagrams.close()
        try NamedPipe.remove(path: pipePath)
        fileLock.close()
        try FileManager.default.removeItem(atPath: fileLockPath)
    }
}

let objects = try Objects(prefix: prefix, fileLockPath: fileLockPath)

// MARK: - Top-level code

// The smallest async script, as issue 16 reported it (it did not compile).
let items = try ProcessSemaphore.create(name: prefix + "-items", value: 1)
try await items.wait()
items.close()

// Every verb, directly at top level (not in a closure or a function).
let o = objects
try await o.mutex.lock(timeout: .seconds(10))
try o.mutex.unlock()
try await o.mutex.withLock { }
try await o.mutex.withLock(timeout: .seconds(10), onOwnerDied: { }) { }
try await o.semaphore.wait(timeout: .seconds(10))
try o.semaphore.signal()
try await o.event.wait()
try await o.mutex.lock()
do { try await o.condition.wait(on: o.mutex, timeout: .milliseconds(1)) } catch { guard error.code == .timedOut else { throw error } }
try o.mutex.unlock()
try await o.rwLock.readLock()
try o.rwLock.readUnlock()
try await o.rwLock.writeLock(timeout: .seconds(10))
try o.rwLock.writeUnlock()
try await o.rwLock.withReadLock { }
try await o.rwLock.withWriteLock { }
try await o.rwLock.withWriteLock(onOwnerDied: { }) { }
let value = try await o.variable.take()
try await o.variable.put(value + 1, timeout: .seconds(10))
_ = try await o.variable.read()
_ = try await o.variable.swap(value)
try await o.variable.modify { $0 += 0 }
let client = try await LocalSocket.connect(name: o.socketName, timeout: .seconds(10))
let server = try await o.listener.accept(timeout: .seconds(10))
try await client.send([1, 2, 3])
_ = try await server.receive(timeout: .seconds(10))
try await client.flush()
let segment = try SharedMemory.anonymous(size: 4096)
try await server.send(segment)
try await client.receiveSegment(timeout: .seconds(10)).close()
segment.close()
client.close()
server.close()
let second = try await LocalSocket.connect(path: LocalSocketListener.path(forName: o.socketName))
try await o.listener.accept().close()
second.close()
let datagramClient = try LocalDatagramSocket.connect(name: o.datagramName)
try await datagramClient.send([1])
let datagram = try await o.datagrams.receive(timeout: .seconds(10))
try await o.datagrams.send([2], to: datagram.senderAddress)
_ = try await datagramClient.receive()
datagramClient.close()
try await ProcessMutex.openWhenCreated(name: o.mutex.name!, timeout: .seconds(10)).close()
try await SharedVariable<Int>.openWhenCreated(name: o.variable.name!, timeout: .seconds(10)).close()
let watched = try await SharedWatchedValue<Int>.openWhenCreated(name: o.watched.name!, timeout: .seconds(10))
_ = try await watched.next(after: 0, timeout: .seconds(10))
for try await _ in watched.updates { break }
watched.close()
let reader = try NamedPipe.openForReading(path: o.pipePath)
let writer = try await NamedPipe.openForWriting(path: o.pipePath, timeout: .seconds(10))
try await writer.write([1])
_ = try await reader.read(timeout: .seconds(10))
writer.close()
reader.close()
try await o.fileLock.lock(.shared, timeout: .seconds(10))
o.fileLock.unlock()
try await o.fileLock.withLock { }
switch try await SingleInstance.acquire(name: o.appName, arguments: []) {
case .primary(let instance): instance.close()
case .secondary: throw InterprocessError(.alreadyExists, objectName: o.appName, detail: "another primary")
}
print("top-level code: ok")

// MARK: - An async function

func allVerbs(_ o: Objects) async throws {
    try await o.mutex.lock(timeout: .seconds(10))
    try o.mutex.unlock()
    try await o.mutex.withLock { }
    try await o.mutex.withLock(timeout: .seconds(10), onOwnerDied: { }) { }
    try await o.semaphore.wait(timeout: .seconds(10))
    try o.semaphore.signal()
    try await o.event.wait()
    try await o.mutex.lock()
    do { try await o.condition.wait(on: o.mutex, timeout: .milliseconds(1)) } catch { guard error.code == .timedOut else { throw error } }
    try o.mutex.unlock()
    try await o.rwLock.readLock()
    try o.rwLock.readUnlock()
    try await o.rwLock.writeLock(timeout: .seconds(10))
    try o.rwLock.writeUnlock()
    try await o.rwLock.withReadLock { }
    try await o.rwLock.withWriteLock { }
    try await o.rwLock.withWriteLock(onOwnerDied: { }) { }
    let value = try await o.variable.take()
    try await o.variable.put(value + 1, timeout: .seconds(10))
    _ = try await o.variable.read()
    _ = try await o.variable.swap(value)
    try await o.variable.modify { $0 += 0 }
    let client = try await LocalSocket.connect(name: o.socketName, timeout: .seconds(10))
    let server = try await o.listener.accept(timeout: .seconds(10))
    try await client.send([1, 2, 3])
    _ = try await server.receive(timeout: .seconds(10))
    try await client.flush()
    let segment = try SharedMemory.anonymous(size: 4096)
    try await server.send(segment)
    try await client.receiveSegment(timeout: .seconds(10)).close()
    segment.close()
    client.close()
    server.close()
    let datagramClient = try LocalDatagramSocket.connect(name: o.datagramName)
    try await datagramClient.send([1])
    let datagram = try await o.datagrams.receive(timeout: .seconds(10))
    try await o.datagrams.send([2], to: datagram.senderAddress)
    _ = try await datagramClient.receive()
    datagramClient.close()
    try await ProcessMutex.openWhenCreated(name: o.mutex.name!, timeout: .seconds(10)).close()
    try await SharedVariable<Int>.openWhenCreated(name: o.variable.name!, timeout: .seconds(10)).close()
    let watched = try await SharedWatchedValue<Int>.openWhenCreated(name: o.watched.name!, timeout: .seconds(10))
    _ = try await watched.next(after: 0, timeout: .seconds(10))
    for try await _ in watched.updates { break }
    watched.close()
    let reader = try NamedPipe.openForReading(path: o.pipePath)
    let writer = try await NamedPipe.openForWriting(path: o.pipePath, timeout: .seconds(10))
    try await writer.write([1])
    _ = try await reader.read(timeout: .seconds(10))
    writer.close()
    reader.close()
    try await o.fileLock.lock(.shared, timeout: .seconds(10))
    o.fileLock.unlock()
    try await o.fileLock.withLock { }
    if case .primary(let instance) = try await SingleInstance.acquire(name: o.appName, arguments: []) { instance.close() }
}

try await allVerbs(objects)
print("async function: ok")

// MARK: - An actor's method

/// Its scoped bodies touch the actor's state: they run in the actor's isolation.
actor Worker {
    var bodies = 0

    func allVerbs(_ o: Objects) async throws {
        try await o.mutex.lock(timeout: .seconds(10))
        try o.mutex.unlock()
        try await o.mutex.withLock { bodies += 1 }
        try await o.mutex.withLock(timeout: .seconds(10), onOwnerDied: { bodies -= 1000 }) { bodies += 1 }
        try await o.semaphore.wait(timeout: .seconds(10))
        try o.semaphore.signal()
        try await o.event.wait()
        try await o.mutex.lock()
        do { try await o.condition.wait(on: o.mutex, timeout: .milliseconds(1)) } catch { guard error.code == .timedOut else { throw error } }
        try o.mutex.unlock()
        try await o.rwLock.readLock()
        try o.rwLock.readUnlock()
        try await o.rwLock.writeLock(timeout: .seconds(10))
        try o.rwLock.writeUnlock()
        try await o.rwLock.withReadLock { bodies += 1 }
        try await o.rwLock.withWriteLock { bodies += 1 }
        try await o.rwLock.withWriteLock(onOwnerDied: { bodies -= 1000 }) { bodies += 1 }
        let value = try await o.variable.take()
        try await o.variable.put(value + 1, timeout: .seconds(10))
        _ = try await o.variable.read()
        _ = try await o.variable.swap(value)
        try await o.variable.modify { $0 += 0 }
        let client = try await LocalSocket.connect(name: o.socketName, timeout: .seconds(10))
        let server = try await o.listener.accept(timeout: .seconds(10))
        try await client.send([1, 2, 3])
        _ = try await server.receive(timeout: .seconds(10))
        try await client.flush()
        let segment = try SharedMemory.anonymous(size: 4096)
        try await server.send(segment)
        try await client.receiveSegment(timeout: .seconds(10)).close()
        segment.close()
        client.close()
        server.close()
        let datagramClient = try LocalDatagramSocket.connect(name: o.datagramName)
        try await datagramClient.send([1])
        let datagram = try await o.datagrams.receive(timeout: .seconds(10))
        try await o.datagrams.send([2], to: datagram.senderAddress)
        _ = try await datagramClient.receive()
        datagramClient.close()
        try await ProcessMutex.openWhenCreated(name: o.mutex.name!, timeout: .seconds(10)).close()
        try await SharedVariable<Int>.openWhenCreated(name: o.variable.name!, timeout: .seconds(10)).close()
        let watched = try await SharedWatchedValue<Int>.openWhenCreated(name: o.watched.name!, timeout: .seconds(10))
        _ = try await watched.next(after: 0, timeout: .seconds(10))
        for try await _ in watched.updates { break }
        watched.close()
        let reader = try NamedPipe.openForReading(path: o.pipePath)
        let writer = try await NamedPipe.openForWriting(path: o.pipePath, timeout: .seconds(10))
        try await writer.write([1])
        _ = try await reader.read(timeout: .seconds(10))
        writer.close()
        reader.close()
        try await o.fileLock.lock(.shared, timeout: .seconds(10))
        o.fileLock.unlock()
        try await o.fileLock.withLock { bodies += 1 }
        if case .primary(let instance) = try await SingleInstance.acquire(name: o.appName, arguments: []) { instance.close() }
    }
}

let worker = Worker()
try await worker.allVerbs(objects)
let bodies = await worker.bodies
guard bodies == 6 else { fatalError("the actor ran \(bodies) scoped bodies, not 6") }
print("actor method: ok")

// MARK: - A Task

try await Task {
    let o = objects
    try await o.mutex.lock(timeout: .seconds(10))
    try o.mutex.unlock()
    try await o.mutex.withLock { }
    try await o.mutex.withLock(timeout: .seconds(10), onOwnerDied: { }) { }
    try await o.semaphore.wait(timeout: .seconds(10))
    try o.semaphore.signal()
    try await o.event.wait()
    try await o.mutex.lock()
    do { try await o.condition.wait(on: o.mutex, timeout: .milliseconds(1)) } catch let error as InterprocessError { guard error.code == .timedOut else { throw error } }
    try o.mutex.unlock()
    try await o.rwLock.readLock()
    try o.rwLock.readUnlock()
    try await o.rwLock.writeLock(timeout: .seconds(10))
    try o.rwLock.writeUnlock()
    try await o.rwLock.withReadLock { }
    try await o.rwLock.withWriteLock { }
    try await o.rwLock.withWriteLock(onOwnerDied: { }) { }
    let value = try await o.variable.take()
    try await o.variable.put(value + 1, timeout: .seconds(10))
    _ = try await o.variable.read()
    _ = try await o.variable.swap(value)
    try await o.variable.modify { $0 += 0 }
    let client = try await LocalSocket.connect(name: o.socketName, timeout: .seconds(10))
    let server = try await o.listener.accept(timeout: .seconds(10))
    try await client.send([1, 2, 3])
    _ = try await server.receive(timeout: .seconds(10))
    try await client.flush()
    let segment = try SharedMemory.anonymous(size: 4096)
    try await server.send(segment)
    try await client.receiveSegment(timeout: .seconds(10)).close()
    segment.close()
    client.close()
    server.close()
    let datagramClient = try LocalDatagramSocket.connect(name: o.datagramName)
    try await datagramClient.send([1])
    let datagram = try await o.datagrams.receive(timeout: .seconds(10))
    try await o.datagrams.send([2], to: datagram.senderAddress)
    _ = try await datagramClient.receive()
    datagramClient.close()
    try await ProcessMutex.openWhenCreated(name: o.mutex.name!, timeout: .seconds(10)).close()
    try await SharedVariable<Int>.openWhenCreated(name: o.variable.name!, timeout: .seconds(10)).close()
    let watched = try await SharedWatchedValue<Int>.openWhenCreated(name: o.watched.name!, timeout: .seconds(10))
    _ = try await watched.next(after: 0, timeout: .seconds(10))
    for try await _ in watched.updates { break }
    watched.close()
    let reader = try NamedPipe.openForReading(path: o.pipePath)
    let writer = try await NamedPipe.openForWriting(path: o.pipePath, timeout: .seconds(10))
    try await writer.write([1])
    _ = try await reader.read(timeout: .seconds(10))
    writer.close()
    reader.close()
    try await o.fileLock.lock(.shared, timeout: .seconds(10))
    o.fileLock.unlock()
    try await o.fileLock.withLock { }
    if case .primary(let instance) = try await SingleInstance.acquire(name: o.appName, arguments: []) { instance.close() }
}.value
print("task: ok")

// Every context gave back what it took.
guard objects.semaphore.value == 1, objects.event.isSet, objects.variable.tryRead() == 1, !objects.mutex.isLocked,
      !objects.rwLock.isWriteLocked, objects.rwLock.readerCount == 0, objects.fileLock.mode == nil
else { fatalError("a context left an object changed") }
try objects.close()
print("done")
