import ArgumentParser
import Interprocess
import InterprocessSystem
import InterprocessToolSupport

/// `ipc demo workers`: worker processes share work through a channel and hand their results back
/// through a shared heap.
///
/// This process creates a ``Channel`` of jobs, a channel of results and a ``SharedHeap``, and starts
/// `--workers` copies of itself (`ipc demo-worker NAME`). Each worker takes jobs from the channel
/// (each job goes to exactly one of them), computes the answer, writes it into a block of the heap
/// and sends the block's ``SharedPointer`` back on the results channel, handing the block over
/// (``SharedAllocation/relinquish()``). This process adopts each block (``SharedHeap/adopt(_:)``),
/// checks the answer against its own computation, frees the block, and checks that every job was
/// done exactly once. Then it closes the jobs channel (the workers see the end and exit), checks
/// that no block is left in the heap, and lets go of everything: the names are gone.
struct DemoWorkers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "Watch worker processes share jobs through a channel and return results through a shared heap."
    )

    @Option(help: "Worker processes to start (1–64).")
    var workers = 3

    @Option(help: "Jobs to hand out (1–1000000).")
    var jobs = 1000

    @Option(help: "The prefix of the names of the channels and the heap (default: a unique demo_… name).")
    var name: String?

    func validate() throws {
        guard (1...64).contains(workers) else { throw ValidationError("--workers must be 1 to 64") }
        guard (1...1_000_000).contains(jobs) else { throw ValidationError("--jobs must be 1 to 1000000") }
    }

    func run() throws {
        let session = try DemoWorkersSession(prefix: name ?? SharedObjectName.unique(prefix: "demo").description)
        defer { session.tearDown() }
        try session.startWorkers(workers)
        try session.handOut(jobs)
        try session.stopWorkers()
        try session.closeAndCheckGone()
    }
}

/// A job: a number whose Collatz sequence the worker walks.
struct DemoJob: BitwiseCopyable, Sendable {
    var id: UInt64
    var input: UInt64

    init(id: UInt64) {
        self.id = id
        input = id &* 7919 % 1_000_003 + 1
    }
}

/// A worker's answer, written into a block of the shared heap.
struct DemoAnswer: BitwiseCopyable, Sendable {
    var job: UInt64
    var worker: Int32
    var steps: UInt32
    var peak: UInt64

    /// The answer to `job`: the steps of its Collatz sequence down to 1, and the largest number on the way.
    init(job: DemoJob, worker: Int32) {
        var value = job.input, steps: UInt32 = 0, peak = job.input
        while value != 1 {
            value = value % 2 == 0 ? value / 2 : 3 &* value &+ 1
            peak = max(peak, value)
            steps &+= 1
        }
        self.job = job.id
        self.worker = worker
        self.steps = steps
        self.peak = peak
    }
}

/// What a worker sends back: the job and the heap block that holds its answer.
struct DemoResult: BitwiseCopyable, Sendable {
    var job: UInt64
    var answer: SharedPointer<DemoAnswer>
}

/// The names of the demo's objects, from one prefix.
struct DemoWorkerNames {
    let jobs: String
    let results: String
    let heap: String

    init(prefix: String) {
        jobs = prefix + "-jobs"
        results = prefix + "-results"
        heap = prefix + "-heap"
    }
}

/// The parent's side of `ipc demo workers`, one method per step.
final class DemoWorkersSession {
    let log = DemoLog(role: "demo")
    let prefix: String
    let names: DemoWorkerNames
    let jobs: Channel<DemoJob>
    let results: Channel<DemoResult>
    let heap: SharedHeap
    private var workers: [ChildProcess] = []
    private var ended = false
    static let timeout: Duration = .seconds(30)

    init(prefix: String) throws {
        self.prefix = prefix
        let names = DemoWorkerNames(prefix: prefix)
        self.names = names
        (jobs, results, heap) = try Self.createObjects(names)
        log("created channel \(names.jobs) (64 jobs), channel \(names.results) (64 results) and heap \(names.heap) (\(heap.capacity >> 10) KiB)")
    }

    /// Creates the two channels and the heap; if one cannot be created, lets go of those that were.
    private static func createObjects(_ names: DemoWorkerNames) throws -> (Channel<DemoJob>, Channel<DemoResult>, SharedHeap) {
        let jobs = try Channel<DemoJob>.create(name: names.jobs, capacity: 64)
        var done = false
        defer { if !done { jobs.detach() } }
        let results = try Channel<DemoResult>.create(name: names.results, capacity: 64)
        defer { if !done { results.detach() } }
        let heap = try SharedHeap.create(name: names.heap, capacity: 1 << 20)
        done = true
        return (jobs, results, heap)
    }

    func startWorkers(_ count: Int) throws {
        let executable = BuiltExecutable.path(of: "ipc") ?? CommandLine.arguments[0]
        for _ in 0..<count {
            workers.append(try ChildProcess.spawn(executable, ["demo-worker", prefix], standardOutput: .inherit, standardError: .inherit))
        }
        log("started \(count) worker process\(count == 1 ? "" : "es"): pids \(workers.map { "\($0.pid)" }.joined(separator: ", "))")
    }

    /// Sends `count` jobs while taking the results as they come (a full jobs channel means results
    /// are on their way), adopting, checking and freeing each answer's block.
    func handOut(_ count: Int) throws {
        var done = [Bool](repeating: false, count: count)
        var perWorker: [Int32: Int] = [:]
        var sent = 0, received = 0
        log("sending \(count) jobs; each worker takes the next one, computes it, and returns its answer in a heap block")
        while received < count {
            while sent < count, try jobs.trySend(DemoJob(id: UInt64(sent))) { sent += 1 }
            guard received < sent else { continue }
            guard let result = try nextResult() else {
                try checkWorkersRunning()
                continue
            }
            let value = try takeAnswer(result.answer)
            guard result.job < UInt64(count), value.job == result.job else {
                throw ToolError("a result for job \(result.job) holds an answer to job \(value.job)")
            }
            guard !done[Int(result.job)] else { throw ToolError("job \(result.job) was done twice") }
            let expected = DemoAnswer(job: DemoJob(id: result.job), worker: value.worker)
            guard value.steps == expected.steps, value.peak == expected.peak else {
                throw ToolError("job \(result.job): worker \(value.worker) answered \(value.steps) steps, peak \(value.peak)")
            }
            done[Int(result.job)] = true
            perWorker[value.worker, default: 0] += 1
            received += 1
        }
        guard done.allSatisfy({ $0 }) else { throw ToolError("some jobs were not done") }
        for worker in workers {
            log("  worker pid \(worker.pid) did \(perWorker[worker.pid] ?? 0) job\((perWorker[worker.pid] ?? 0) == 1 ? "" : "s")")
        }
        log("every job done exactly once: \(count) answers adopted from the heap, checked and freed")
    }

    /// Closes the jobs channel: each worker finishes, sees the end and exits.
    func stopWorkers() throws {
        jobs.close()
        log("closed \(names.jobs); waiting for the workers to see the end and exit")
        var failures: [String] = []
        for worker in workers {
            let termination = worker.wait(timeout: Self.timeout)
            if termination != .exited(0) { failures.append("worker \(worker.pid) \(termination.map { "\($0)" } ?? "did not exit and was killed")") }
        }
        ended = true
        guard failures.isEmpty else { throw ToolError(failures.joined(separator: "; ")) }
        log("every worker exited 0")
    }

    func closeAndCheckGone() throws {
        let report = try heap.check()
        guard report.isConsistent, let statistics = report.statistics else {
            throw ToolError("the heap is not consistent: \(report.problems.joined(separator: "; "))")
        }
        log("heap checked: consistent, \(statistics.blocks) block\(statistics.blocks == 1 ? "" : "s") in use after the answers were freed")
        guard statistics.blocks == 0 else { throw ToolError("\(statistics.blocks) heap blocks were left") }
        jobs.detach()
        results.detach()
        heap.close()
        let left = [names.jobs, names.results, names.heap].filter { SharedMemory.exists(name: $0) }
        guard left.isEmpty else { throw ToolError("still there after the last holder let go: \(left.joined(separator: ", "))") }
        log("\(names.jobs), \(names.results) and \(names.heap) are gone: their last holder let go")
    }

    /// The next result, or nil if none came within 200 ms.
    private func nextResult() throws(InterprocessError) -> DemoResult? {
        do {
            return try results.blockingReceive(timeout: .milliseconds(200))
        } catch where error.code == .timedOut {
            return nil
        }
    }

    /// Adopts the heap block of an answer (it is this process's from now on), reads it and frees it.
    private func takeAnswer(_ pointer: SharedPointer<DemoAnswer>) throws(InterprocessError) -> DemoAnswer {
        let answer = try heap.adopt(pointer)
        let value = answer.pointee
        try answer.deallocate()
        return value
    }

    private func checkWorkersRunning() throws {
        for worker in workers {
            if let termination = worker.poll() { throw ToolError("worker \(worker.pid) \(termination) before the jobs were done") }
        }
    }

    /// Ends workers still running (after a failed step) and lets go of everything.
    func tearDown() {
        jobs.close()
        if !ended { for worker in workers { worker.wait(timeout: .zero) } }
        jobs.detach()
        results.detach()
        heap.close()
    }
}

/// `ipc demo-worker PREFIX` (hidden): a worker process of `ipc demo workers`.
struct DemoWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-worker",
        abstract: "A worker process that `ipc demo workers` starts.",
        shouldDisplay: false
    )

    @Argument(help: "The prefix of the names that `ipc demo workers` created.")
    var prefix: String

    func run() throws {
        let log = DemoLog(role: "worker")
        let names = DemoWorkerNames(prefix: prefix)
        let jobs = try Channel<DemoJob>.open(name: names.jobs)
        defer { jobs.detach() }
        let results = try Channel<DemoResult>.open(name: names.results)
        defer { results.detach() }
        let heap = try SharedHeap.open(name: names.heap)
        defer { heap.close() }
        var count = 0
        while let job = try nextJob(jobs) {
            let allocation = try heap.allocate(DemoAnswer(job: job, worker: log.pid))
            let answer = allocation.relinquish()
            do {
                try results.blockingSend(DemoResult(job: job.id, answer: answer), timeout: DemoWorkersSession.timeout)
            } catch {
                try? heap.unsafeDeallocate(answer)
                throw error
            }
            count += 1
        }
        log("did \(count) job\(count == 1 ? "" : "s"); the jobs channel is closed, exiting")
    }

    /// The next job, or nil once the jobs channel is closed and drained.
    private func nextJob(_ jobs: Channel<DemoJob>) throws(InterprocessError) -> DemoJob? {
        do {
            return try jobs.blockingReceive(timeout: DemoWorkersSession.timeout)
        } catch where error.code == .closed {
            return nil
        }
    }
}
