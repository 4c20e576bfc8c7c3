// swift-tools-version: 6.1
// Runnable examples of Interprocess: one executable per example, each a single main.swift that
// starts its own peer processes. A package of its own (depending on the library by path), so that
// the library's build and `swift test` do not build them; `.ci/run` builds and runs every one
// (`Examples/run-all`). Run one with `swift run --package-path Examples NAME`.
import PackageDescription

let examples = [
    "shared-value",       // two processes share a Codable value in a segment, guarded by a placed mutex
    "producer-consumer",  // a bounded buffer between two processes on two ProcessSemaphores
    "crash-counter",      // a worker SIGKILLed while holding a ProcessMutex; the others repair and go on
    "mvar-pipeline",      // three processes in a pipeline of SharedVariables (MVars)
    "job-pool",           // 3 worker processes take 1,000 jobs from a Channel, each done exactly once
    "priority-queue",     // a MessageQueue delivers the highest priority first
    "heap-named",         // processes meet at a named object in a SharedHeap (findOrCreate)
    "single-instance",    // later launches hand their arguments to the running instance
    "pass-descriptor",    // a LocalSocket passes a pipe and an anonymous segment to another process
    "config-broadcaster", // a writer and two readers (one late) watch a config: SharedWatchedValue
    "pub-sub",            // a publisher and 3 subscriber processes; each gets every message, in order
    "request-response",   // a server process answers 3 client processes through a Service
]

let package = Package(
    name: "InterprocessExamples",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Interprocess", path: ".."),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.0"),
    ],
    targets: examples.map { name in
        .executableTarget(
            name: name,
            dependencies: [
                .product(name: "Interprocess", package: "Interprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: name
        )
    }
)
