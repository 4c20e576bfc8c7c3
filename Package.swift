// swift-tools-version: 6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Interprocess",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Interprocess", targets: ["Interprocess"]),
        .executable(name: "ipc", targets: ["ipc"]),
        // The heap's C ABI: libInterprocessHeap.so, for C programs (interprocess_heap.h).
        .library(name: "InterprocessHeap", type: .dynamic, targets: ["InterprocessHeapABI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        // `swift package generate-documentation`: the DocC catalog Sources/Interprocess/Interprocess.docc
        // (a command plugin: nothing of it is built into the library or its users' programs).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C shim: only what Swift cannot call (variadic fcntl/syscall, futex constants) and the
        // C structs of the shared-memory headers. No logic.
        .target(name: "CInterprocess"),
        // Typed wrappers of the operating system. The only target that imports Glibc/Darwin.
        .target(
            name: "InterprocessSystem",
            dependencies: [
                "CInterprocess",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Interprocess",
            dependencies: [
                "InterprocessSystem",
                "CInterprocess",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        // The C ABI of SharedHeap: the public header `interprocess_heap.h` (in include/) and its
        // plain-C part (the calling thread's last error, the tables of function pointers).
        .target(name: "CInterprocessHeapABI"),
        // The C ABI's functions, exported from Swift (`@_cdecl`) under the header's names. The core
        // library knows nothing of it; the product "InterprocessHeap" makes it a shared library.
        .target(
            name: "InterprocessHeapABI",
            dependencies: ["Interprocess", "CInterprocessHeapABI"],
            swiftSettings: strictSettings
        ),
        // Process and terminal helpers of the tools, the benchmarks and the tests (spawning and
        // reaping children, standard streams, termination signals). Not a product, and the library
        // never depends on it. It calls the C library itself (posix_spawn, waitpid, signal masks).
        .target(
            name: "InterprocessToolSupport",
            dependencies: [
                "InterprocessSystem",
                "CInterprocess",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        // The scenarios of `ipc bench`, one file each (not a product). Its OS baselines (pthread
        // mutex, POSIX semaphores, pipes, socket pairs) are its only C library calls, in one file.
        .target(
            name: "InterprocessBenchmarks",
            dependencies: [
                "Interprocess",
                "InterprocessSystem",
                "InterprocessToolSupport",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "ipc",
            dependencies: [
                "Interprocess",
                "InterprocessSystem",
                "InterprocessToolSupport",
                "InterprocessBenchmarks",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        // A peer process that the tests spawn (not a product).
        .executableTarget(
            name: "InterprocessTestChild",
            dependencies: [
                "Interprocess", "InterprocessSystem", "InterprocessToolSupport",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strictSettings
        ),
        // Every async verb called from top-level code, an async function, an actor and a Task, as a
        // user's main.swift would (not a product): that it compiles is the test that the async forms
        // resolve in each context; AsyncContextsTests runs it.
        .executableTarget(
            name: "InterprocessAsyncContexts",
            dependencies: ["Interprocess"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "InterprocessTests",
            dependencies: [
                "Interprocess", "InterprocessSystem", "InterprocessToolSupport", "InterprocessBenchmarks",
                "InterprocessTestChild", "InterprocessAsyncContexts", "ipc", "InterprocessHeapABI",
            ],
            // C programs that HeapCABITests compiles with the system's C compiler.
            exclude: ["CPrograms"],
            swiftSettings: strictSettings
        ),
    ]
)
